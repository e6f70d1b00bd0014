//! Splitting each interval's energy among processes, by their exact on-CPU
//! time. Pure: no I/O and no clock, so every rule here is unit- and
//! property-tested.
//!
//! # What is split, and the conservation rule
//!
//! The energy of an interval is cut into *pools*; each pool is split among
//! processes by their on-CPU time on the pool's CPUs, and what is not given
//! to processes is reported as *unattributed* (idle). For every pool, and so
//! for the host:
//!
//! ```text
//! Σ processes + unattributed = energy      (to floating-point rounding)
//! ```
//!
//! - **No psys zone**: one pool per socket, holding that socket's package(s)
//!   and DRAM ([`crate::sensors::socket_joules`]), split by time on that
//!   socket's CPUs. A process that ran only on socket 1 gets nothing of
//!   socket 0. Package or DRAM zones that belong to no socket of the
//!   topology (no socket label, or a socket the CPU map does not know) form
//!   one extra host-wide pool split by time on all CPUs, so that nothing
//!   measured is lost. `Core`/`Uncore` are inside the package: never split.
//! - **psys present**: the platform counter already contains the packages and
//!   DRAM, so the host is one pool (Σ psys) split by time on all CPUs; the
//!   sockets' own package+DRAM energy is reported for information only
//!   ([`SocketEnergy::measured`]).
//!
//! Either way the pools add up to [`crate::sensors::host_joules`].
//!
//! # Policies
//!
//! [`IdlePolicy::Unattributed`] (default, as Scaphandre 1.0): a process gets
//! `E × t / (interval × n_cpus)`, its share of the pool's CPU capacity; the
//! rest, the energy of idle capacity, stays unattributed. When measured
//! times slightly exceed the capacity (clock skew between the time source
//! and the interval), the divisor becomes `Σ t`, so the processes never get
//! more than `E` and unattributed is never negative.
//! [`IdlePolicy::Proportional`]: all of `E` is split by CPU share,
//! `E × t / Σ t`; with no CPU time at all the pool stays unattributed.
//!
//! # Processes without per-CPU times
//!
//! The procfs source only knows a process's total time. That time is spread
//! over sockets in proportion to each socket's busy time
//! (`interval × cpus − idle`, from the sample's per-CPU idle ns), or by CPU
//! count when idle times are missing or all sockets look idle. Time on a CPU
//! that the topology does not know (offline when it was read, or
//! hot-plugged since) is spread the same way: it neither vanishes nor counts
//! twice. `attribution/proportionality.rs` checks every process's energy and
//! every pool's idle energy against this rule, recomputed independently.
//! Exited processes are treated like any other: their last interval counts.
use std::{collections::BTreeMap, time::Duration};

use smallvec::SmallVec;

use crate::{
    amounts::Amounts,
    cputime::{CpuSample, ProcessKey},
    sensors::{counts_in_socket, topology::Topology, DomainKind, ZoneEnergy},
};

/// Relative float rounding allowed wherever a sum of parts is compared with
/// its whole downstream (today one place: the metrics' `others`, everything
/// minus the listed series): the one tolerance of the conservation rule
/// above. Container totals need none: they are sums of the very per-cycle
/// amounts, never differences. Sums of thousands of terms added in
/// different orders round at about 1e-13 of the whole; anything beyond this
/// is a real gap (or a bug), never rounding.
pub const CONSERVATION_TOLERANCE: f64 = 1e-9;

/// True when `gap` between parts and `whole` is more than float rounding
/// (see [`CONSERVATION_TOLERANCE`]).
#[must_use]
pub fn beyond_rounding(gap: f64, whole: f64) -> bool {
    gap > CONSERVATION_TOLERANCE * (1.0 + whole.abs())
}

/// What happens to the energy of idle CPU capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Processes get their share of capacity; idle energy is reported apart.
    #[default]
    Unattributed,
    /// All energy goes to the processes that ran, by CPU share.
    Proportional,
}

/// A pool of energy and how it was split. `energy = attributed + unattributed`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Split {
    pub energy: f64,
    pub attributed: f64,
    pub unattributed: f64,
}

/// Which CPUs a pool's energy was split over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pool {
    /// One socket's package(s) and DRAM, over that socket's CPUs.
    Socket(u32),
    /// Psys, or zones of no known socket, over all CPUs.
    Host,
}

/// One process's energy during the interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessEnergy {
    pub joules: f64,
    /// Joules for its time on each socket's CPUs (from whichever pool);
    /// sockets where it did not run are absent. Sums to `joules`, except for
    /// time that could be placed on no socket (no topology).
    pub per_socket: SocketJoules,
}

/// Joules by socket id, ascending, for the sockets a process got energy
/// for. Inline for up to two sockets: an interval makes one per process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SocketJoules(SmallVec<[(u32, f64); 2]>);

impl SocketJoules {
    fn add(&mut self, socket: u32, joules: f64) {
        match self.0.binary_search_by_key(&socket, |&(s, _)| s) {
            Ok(i) => self.0[i].1 += joules,
            Err(i) => self.0.insert(i, (socket, joules)),
        }
    }

    /// Joules for `socket`, if it got any.
    #[must_use]
    pub fn get(&self, socket: u32) -> Option<f64> {
        self.0.iter().find(|&&(s, _)| s == socket).map(|&(_, j)| j)
    }

    /// The sockets, ascending.
    pub fn sockets(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().map(|&(s, _)| s)
    }

    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.0.iter().map(|&(_, j)| j)
    }
}

/// One socket during the interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SocketEnergy {
    /// Its package(s) + DRAM as measured. With psys, informational: the
    /// host pool is what gets split.
    pub measured: f64,
    /// Joules given to processes for their time on its CPUs.
    pub attributed: f64,
}

/// Everything one interval's split produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attribution {
    /// What watts divide by: the CPU interval as `attribute` returns it;
    /// the agent replaces it by the energy reading's own interval.
    pub interval: Duration,
    pub policy: IdlePolicy,
    /// Sum of the pools: `energy` is the host energy
    /// ([`crate::sensors::host_joules`]), `unattributed` the idle energy.
    pub host: Split,
    /// Every pool, sockets ascending, then the host-wide one if any.
    pub pools: Vec<(Pool, Split)>,
    /// Every socket of the topology or of the zones.
    pub sockets: BTreeMap<u32, SocketEnergy>,
    /// Every process of the sample, including those with no CPU time, once
    /// each, by key ascending.
    pub processes: Vec<(ProcessKey, ProcessEnergy)>,
}

impl Attribution {
    /// The energy of one process of the sample.
    #[must_use]
    pub fn process(&self, key: &ProcessKey) -> Option<&ProcessEnergy> {
        let i = self.processes.binary_search_by_key(key, |(k, _)| *k).ok()?;
        Some(&self.processes[i].1)
    }

    /// The split of one pool, if there was such a pool.
    #[must_use]
    pub fn pool(&self, pool: Pool) -> Option<&Split> {
        self.pools.iter().find(|(p, _)| *p == pool).map(|(_, s)| s)
    }
}

/// Splits `zones` (one interval's deltas) among the processes of `sample`.
///
/// `interval` is the length the CPU times were measured over (normally
/// `sample.interval`): it sets each pool's capacity, `interval × n_cpus`.
#[must_use]
pub fn attribute(
    zones: &[ZoneEnergy],
    sample: &CpuSample,
    topology: &Topology,
    interval: Duration,
    policy: IdlePolicy,
) -> Attribution {
    let sockets = topology.sockets();
    let interval_ns = interval.as_nanos() as f64;
    let times = socket_times(sample, topology, interval_ns);
    let energy = PoolEnergies::from_zones(zones, sockets);

    let mut out = Attribution {
        interval,
        policy,
        ..Attribution::default()
    };
    for (&socket, &measured) in &energy.measured {
        out.sockets.entry(socket).or_default().measured = measured;
    }
    for &socket in sockets {
        out.sockets.entry(socket).or_default();
    }
    out.processes = times
        .keys
        .iter()
        .map(|&key| (key, ProcessEnergy::default()))
        .collect();

    let all: Vec<usize> = (0..sockets.len()).collect();
    let mut pools: Vec<(Pool, f64, Vec<usize>, bool)> = Vec::new();
    if let Some(psys) = energy.psys {
        pools.push((Pool::Host, psys, all, true));
    } else {
        for (i, &socket) in sockets.iter().enumerate() {
            pools.push((Pool::Socket(socket), energy.in_topology[i], vec![i], false));
        }
        if energy.has_orphans {
            pools.push((Pool::Host, energy.orphans, all, true));
        }
    }

    for (pool, joules, members, with_unplaced) in pools {
        let cpus: usize = members
            .iter()
            .map(|&i| topology.cpus_of(sockets[i]).len())
            .sum();
        let capacity = interval_ns * cpus as f64;
        let time_of = |row: usize| {
            let on_sockets = times.on_sockets(row);
            members.iter().map(|&i| on_sockets[i]).sum::<f64>()
                + if with_unplaced {
                    times.unplaced[row]
                } else {
                    0.0
                }
        };
        let total: f64 = (0..times.keys.len()).map(time_of).sum();
        let divisor = match policy {
            IdlePolicy::Unattributed => capacity.max(total),
            IdlePolicy::Proportional => total,
        };
        let mut attributed = 0.0;
        let mut per_socket = vec![0.0; sockets.len()];
        if divisor > 0.0 && joules > 0.0 {
            for (row, (_, process)) in out.processes.iter_mut().enumerate() {
                let on_sockets = times.on_sockets(row);
                for &i in &members {
                    if on_sockets[i] > 0.0 {
                        let j = joules * (on_sockets[i] / divisor);
                        process.per_socket.add(sockets[i], j);
                        per_socket[i] += j;
                        process.joules += j;
                        attributed += j;
                    }
                }
                let unplaced = times.unplaced[row];
                if with_unplaced && unplaced > 0.0 {
                    let j = joules * (unplaced / divisor);
                    process.joules += j;
                    attributed += j;
                }
            }
        }
        for (i, j) in per_socket.into_iter().enumerate().filter(|&(_, j)| j > 0.0) {
            out.sockets.entry(sockets[i]).or_default().attributed += j;
        }
        let split = Split {
            energy: joules,
            attributed,
            unattributed: (joules - attributed).max(0.0),
        };
        out.host.energy += split.energy;
        out.host.attributed += split.attributed;
        out.host.unattributed += split.unattributed;
        out.pools.push((pool, split));
    }
    out
}

/// Every process's on-CPU ns by socket (indexed like `Topology::sockets`),
/// and what could be placed on no socket: one row per process, flat.
struct Times {
    /// The processes, ascending, once each.
    keys: Vec<ProcessKey>,
    /// `keys.len() × n_sockets` ns.
    per_socket: Vec<f64>,
    n_sockets: usize,
    unplaced: Vec<f64>,
}

impl Times {
    fn on_sockets(&self, row: usize) -> &[f64] {
        &self.per_socket[row * self.n_sockets..(row + 1) * self.n_sockets]
    }
}

/// Places every process's time on sockets (see the module doc).
fn socket_times(sample: &CpuSample, topology: &Topology, interval_ns: f64) -> Times {
    let sockets = topology.sockets();
    let n_sockets = sockets.len();
    let weights = spread_weights(sample, topology, interval_ns);
    // Sources sort their samples; a process listed twice is summed.
    let mut order: Vec<usize> = (0..sample.processes.len()).collect();
    if !sample.processes.is_sorted_by_key(|p| p.key) {
        order.sort_by_key(|&i| sample.processes[i].key);
    }
    let mut out = Times {
        keys: Vec::with_capacity(order.len()),
        per_socket: Vec::new(),
        n_sockets,
        unplaced: Vec::new(),
    };
    for i in order {
        let process = &sample.processes[i];
        if out.keys.last() != Some(&process.key) {
            out.keys.push(process.key);
            out.per_socket.resize(out.per_socket.len() + n_sockets, 0.0);
            out.unplaced.push(0.0);
        }
        let row = out.keys.len() - 1;
        let times = &mut out.per_socket[row * n_sockets..(row + 1) * n_sockets];
        let mut unplaced = 0.0;
        if process.per_cpu_ns.is_empty() {
            unplaced = process.total_ns as f64;
        } else {
            for (cpu, ns) in process.per_cpu_ns.iter() {
                match topology
                    .socket_of(cpu)
                    .and_then(|s| sockets.binary_search(&s).ok())
                {
                    Some(i) => times[i] += ns as f64,
                    None => unplaced += ns as f64,
                }
            }
        }
        if unplaced > 0.0 && !weights.is_empty() {
            for (slot, w) in times.iter_mut().zip(&weights) {
                *slot += unplaced * w;
            }
        } else {
            out.unplaced[row] += unplaced;
        }
    }
    out
}

/// Share of each socket (summing to 1) for time that has no CPU: by busy
/// time when every CPU's idle time is known and some socket was busy, else
/// by CPU count. Empty when the topology has no socket.
fn spread_weights(sample: &CpuSample, topology: &Topology, interval_ns: f64) -> Vec<f64> {
    let sockets = topology.sockets();
    let cpus_of = |s: u32| topology.cpus_of(s);
    let busy: Option<Vec<f64>> = sockets
        .iter()
        .map(|&s| {
            cpus_of(s)
                .iter()
                .map(|&cpu| {
                    let idle = *sample.idle_ns.get(cpu as usize)? as f64;
                    Some((interval_ns - idle).max(0.0))
                })
                .sum::<Option<f64>>()
        })
        .collect();
    let raw = match busy {
        Some(busy) if busy.iter().sum::<f64>() > 0.0 => busy,
        _ => sockets.iter().map(|&s| cpus_of(s).len() as f64).collect(),
    };
    let total: f64 = raw.iter().sum();
    if total > 0.0 {
        raw.into_iter().map(|w| w / total).collect()
    } else {
        Vec::new()
    }
}

/// The interval's zones sorted into pools.
struct PoolEnergies {
    /// Σ psys, when there is a psys zone.
    psys: Option<f64>,
    /// Package+DRAM of each topology socket (indexed like `Topology::sockets`).
    in_topology: Vec<f64>,
    /// Package+DRAM of zones with no socket, or a socket the topology lacks.
    orphans: f64,
    has_orphans: bool,
    /// Package+DRAM of every socket named by a zone.
    measured: BTreeMap<u32, f64>,
}

impl PoolEnergies {
    fn from_zones(zones: &[ZoneEnergy], sockets: &[u32]) -> Self {
        let mut out = Self {
            psys: None,
            in_topology: vec![0.0; sockets.len()],
            orphans: 0.0,
            has_orphans: false,
            measured: BTreeMap::new(),
        };
        for zone in zones {
            // Sensors never produce negative or NaN deltas; if one did, it
            // would count as nothing rather than break conservation.
            let joules = if zone.joules.is_finite() {
                zone.joules.max(0.0)
            } else {
                0.0
            };
            if zone.kind == DomainKind::Psys {
                *out.psys.get_or_insert(0.0) += joules;
                continue;
            }
            if !counts_in_socket(zone) {
                continue;
            }
            if let Some(socket) = zone.socket {
                *out.measured.entry(socket).or_default() += joules;
            }
            match zone.socket.and_then(|s| sockets.binary_search(&s).ok()) {
                Some(i) => out.in_topology[i] += joules,
                None => {
                    out.orphans += joules;
                    out.has_orphans = true;
                }
            }
        }
        out
    }
}

/// A cumulative energy counter, its emissions and the power of its last
/// interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cumulative {
    /// Joules since the accumulator started (or since first seen). Never decreases.
    pub joules: f64,
    /// Average watts over the last interval it was updated in.
    pub watts: f64,
    /// Grams of CO2-equivalent of those joules, each interval's at the
    /// carbon intensity in force during it (none without one). Every
    /// counter grows by the same rule in the same interval, so the grams
    /// add up as the joules do. Never decreases.
    pub grams: f64,
}

impl Cumulative {
    /// Adds one interval's joules (and their grams at `grams_per_kwh`); a
    /// negative or non-finite amount (which would make the counter go
    /// backwards or poison it) adds nothing, and the return value says so.
    #[must_use]
    fn add(&mut self, joules: f64, interval: Duration, grams_per_kwh: Option<f64>) -> bool {
        let held = !(joules.is_finite() && joules >= 0.0);
        let joules = if held { 0.0 } else { joules };
        self.joules += joules;
        self.grams += grams_of(joules, grams_per_kwh);
        let secs = interval.as_secs_f64();
        self.watts = if secs > 0.0 { joules / secs } else { 0.0 };
        held
    }
}

/// Grams of `joules` at `grams_per_kwh`, 0 without an intensity (or with a
/// nonsensical one, which `carbon` never hands out).
fn grams_of(joules: f64, grams_per_kwh: Option<f64>) -> f64 {
    grams_per_kwh
        .filter(|i| i.is_finite() && *i >= 0.0)
        .map_or(0.0, |i| crate::amounts::grams(joules, i))
}

/// The cycle an [`Accumulator::add`] belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stamp {
    /// Accumulator time: monotonic, since the accumulator started.
    pub now: Duration,
    /// A number that differs between cycles (see
    /// [`Accumulator::added_in_cycle`]).
    pub cycle: u64,
    /// Carbon intensity in force during the interval, g/kWh.
    pub grams_per_kwh: Option<f64>,
}

/// Cumulative totals of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessTotals {
    pub energy: Cumulative,
    /// Joules and grams added by the latest interval it ran in (0 when the
    /// amount was refused), and that interval's cycle: read them through
    /// [`Accumulator::added_in_cycle`], which says 0 for any other cycle.
    last_added: (f64, f64),
    last_cycle: u64,
    /// Accumulator time when it was first and last in a sample.
    pub first_seen: Duration,
    pub last_seen: Duration,
}

/// Identifies a zone across intervals.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainKey {
    pub socket: Option<u32>,
    pub kind: DomainKind,
    pub name: String,
}

/// Counters since the start, fed one [`Attribution`] per interval.
///
/// No clock inside: the caller passes `now`, a monotonic time since the
/// accumulator started. Processes stay, exited or not, until
/// [`Accumulator::expire`] removes those not seen for a while, so a counter
/// never disappears before exporters had a chance to read its last value.
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    cycles: u64,
    host: HostTotals,
    sockets: BTreeMap<u32, Cumulative>,
    domains: BTreeMap<DomainKey, Cumulative>,
    /// Unattributed (idle) energy of each pool.
    unattributed: BTreeMap<Pool, Cumulative>,
    processes: crate::keyed::Keyed<ProcessTotals>,
    /// Energy of processes removed by [`Accumulator::retire`]: kept so that
    /// Σ processes + retired + unattributed still equals the host energy.
    retired: f64,
    /// The grams of the same energy.
    retired_grams: f64,
    /// The cycle of the latest [`Accumulator::add`]: a process's `watts` is
    /// that cycle's when it ran in it, else 0 (see [`Accumulator::process`]).
    last_add: Option<u64>,
    /// Amounts refused because they would have made a counter go backwards.
    regressions: u64,
}

/// Host-level counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostTotals {
    /// Host energy (see [`crate::sensors::host_joules`]).
    pub energy: Cumulative,
    /// Given to processes.
    pub attributed: Cumulative,
    /// Idle / unattributed.
    pub unattributed: Cumulative,
}

impl Accumulator {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one interval: its `zones` (for per-domain counters) and their
    /// `attribution`, in the cycle `stamp` says (and at its intensity).
    ///
    /// Sockets, domains and processes absent from this interval keep their
    /// joules and show 0 W.
    pub fn add(&mut self, zones: &[ZoneEnergy], attribution: &Attribution, stamp: Stamp) {
        let Stamp {
            now,
            cycle,
            grams_per_kwh: i,
        } = stamp;
        let interval = attribution.interval;
        self.cycles += 1;
        let mut held = 0;
        let mut count = |h: bool| held += u64::from(h);
        let host = &attribution.host;
        count(self.host.energy.add(host.energy, interval, i));
        count(self.host.attributed.add(host.attributed, interval, i));
        count(self.host.unattributed.add(host.unattributed, interval, i));

        for counter in self.sockets.values_mut() {
            counter.watts = 0.0;
        }
        for (&socket, s) in &attribution.sockets {
            count(
                self.sockets
                    .entry(socket)
                    .or_default()
                    .add(s.measured, interval, i),
            );
        }

        for counter in self.unattributed.values_mut() {
            counter.watts = 0.0;
        }
        for (pool, split) in &attribution.pools {
            count(
                self.unattributed
                    .entry(*pool)
                    .or_default()
                    .add(split.unattributed, interval, i),
            );
        }

        for counter in self.domains.values_mut() {
            counter.watts = 0.0;
        }
        let mut this_interval: BTreeMap<DomainKey, f64> = BTreeMap::new();
        for zone in zones {
            let key = DomainKey {
                socket: zone.socket,
                kind: zone.kind,
                name: zone.name.clone(),
            };
            *this_interval.entry(key).or_default() += zone.joules;
        }
        for (key, joules) in this_interval {
            count(
                self.domains
                    .entry(key)
                    .or_default()
                    .add(joules, interval, i),
            );
        }

        self.last_add = Some(cycle);
        self.processes.upsert_sorted(
            attribution
                .processes
                .iter()
                .map(|(key, energy)| (*key, energy)),
            |_, _| ProcessTotals {
                first_seen: now,
                ..ProcessTotals::default()
            },
            |totals, energy| {
                let refused = totals.energy.add(energy.joules, interval, i);
                totals.last_added = if refused {
                    (0.0, 0.0)
                } else {
                    (energy.joules, grams_of(energy.joules, i))
                };
                totals.last_cycle = cycle;
                held += u64::from(refused);
                totals.last_seen = now;
            },
        );
        self.regressions += held;
    }

    /// Amounts refused so far because they would have made a counter go
    /// backwards (a negative or non-finite delta): 0 unless a sensor or
    /// this module has a bug.
    #[must_use]
    pub fn regressions(&self) -> u64 {
        self.regressions
    }

    /// Forgets processes last seen more than `retention` before `now`;
    /// returns how many were removed.
    pub fn expire(&mut self, now: Duration, retention: Duration) -> usize {
        let before = self.processes.len();
        self.processes
            .retain(|_, p| now.saturating_sub(p.last_seen) <= retention);
        before - self.processes.len()
    }

    /// Forgets one process (exited long enough ago), moving its joules into
    /// [`Accumulator::retired_joules`] so that no total shrinks.
    pub fn retire(&mut self, key: &ProcessKey) {
        self.retire_sorted(std::slice::from_ref(key));
    }

    /// [`Accumulator::retire`] for each of `keys` (in key order, as
    /// [`crate::processes::ProcessTable::expire`] gives them), in one pass.
    pub fn retire_sorted(&mut self, keys: &[ProcessKey]) {
        self.processes.remove_sorted(keys, |totals| {
            self.retired += totals.energy.joules;
            self.retired_grams += totals.energy.grams;
        });
    }

    /// Joules of all retired processes.
    #[must_use]
    pub fn retired_joules(&self) -> f64 {
        self.retired
    }

    /// Grams of all retired processes.
    #[must_use]
    pub fn retired_grams(&self) -> f64 {
        self.retired_grams
    }

    /// Intervals added so far.
    #[must_use]
    pub fn cycles(&self) -> u64 {
        self.cycles
    }

    #[must_use]
    pub fn host(&self) -> &HostTotals {
        &self.host
    }

    /// Package+DRAM per socket.
    #[must_use]
    pub fn sockets(&self) -> &BTreeMap<u32, Cumulative> {
        &self.sockets
    }

    /// Unattributed (idle) energy per pool: per socket without psys, one
    /// host-wide pool with it (see the module doc).
    #[must_use]
    pub fn unattributed_by_pool(&self) -> &BTreeMap<Pool, Cumulative> {
        &self.unattributed
    }

    /// Every zone the sensor reported (package, core, uncore, dram, psys).
    #[must_use]
    pub fn domains(&self) -> &BTreeMap<DomainKey, Cumulative> {
        &self.domains
    }

    #[must_use]
    pub fn process(&self, key: &ProcessKey) -> Option<ProcessTotals> {
        self.processes.get(key).map(|t| self.current(t))
    }

    /// `totals` with 0 W unless the process ran in the latest cycle added
    /// (its watts are only reset when read, not by a pass over every process).
    fn current(&self, totals: &ProcessTotals) -> ProcessTotals {
        let mut totals = *totals;
        if Some(totals.last_cycle) != self.last_add {
            totals.energy.watts = 0.0;
        }
        totals
    }

    /// The joules and grams [`Accumulator::add`] gave `key` in `cycle`
    /// (its CPU seconds are the process table's: 0 here): 0 when it was not
    /// in that cycle's attribution, its amount was refused, or nothing was
    /// added in that cycle. The container totals add exactly these, so they
    /// are made of the very amounts the process totals are.
    #[must_use]
    pub fn added_in_cycle(&self, key: &ProcessKey, cycle: u64) -> Amounts {
        let (joules, grams) = self
            .processes
            .get(key)
            .filter(|t| t.last_cycle == cycle)
            .map_or((0.0, 0.0), |t| t.last_added);
        Amounts {
            joules,
            cpu_seconds: 0.0,
            grams,
        }
    }

    /// Every process kept (running, or exited and not expired), in key order.
    pub fn processes(&self) -> impl Iterator<Item = (&ProcessKey, ProcessTotals)> {
        self.processes.iter().map(|(k, t)| (k, self.current(t)))
    }
}

#[cfg(test)]
mod proportionality;

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use proptest::prelude::*;

    use super::*;
    use crate::{
        cputime::ProcessSample,
        sensors::{
            host_joules,
            powercap::PowercapSensor,
            testutil::{add, write_tree, Entry::File},
        },
    };

    const SEC: Duration = Duration::from_secs(1);
    const SEC_NS: u64 = 1_000_000_000;

    fn stamp(now: Duration, cycle: u64) -> Stamp {
        Stamp {
            now,
            cycle,
            grams_per_kwh: None,
        }
    }

    fn key(pid: u32) -> ProcessKey {
        ProcessKey {
            pid,
            start_ns: u64::from(pid) * 10,
        }
    }

    fn bpf(pid: u32, per_cpu_ns: Vec<u64>) -> ProcessSample {
        ProcessSample {
            key: key(pid),
            total_ns: per_cpu_ns.iter().sum(),
            per_cpu_ns: per_cpu_ns.into(),
            ..ProcessSample::default()
        }
    }

    fn procfs(pid: u32, total_ns: u64) -> ProcessSample {
        ProcessSample {
            key: key(pid),
            total_ns,
            ..ProcessSample::default()
        }
    }

    fn sample(processes: Vec<ProcessSample>, idle_ns: Vec<u64>) -> CpuSample {
        CpuSample {
            interval: SEC,
            processes,
            idle_ns,
            ..CpuSample::default()
        }
    }

    fn zone(socket: Option<u32>, kind: DomainKind, joules: f64) -> ZoneEnergy {
        ZoneEnergy {
            socket,
            kind,
            name: match (kind, socket) {
                (DomainKind::Package, Some(s)) => format!("package-{s}"),
                _ => format!("{kind:?}").to_lowercase(),
            },
            path: None,
            joules,
        }
    }

    fn package(socket: u32, joules: f64) -> ZoneEnergy {
        zone(Some(socket), DomainKind::Package, joules)
    }

    /// `sockets[i]` CPUs on socket i, numbered in order.
    fn topo(sockets: &[u32]) -> Topology {
        let mut cpu = 0;
        let mut map = Vec::new();
        for (s, &n) in sockets.iter().enumerate() {
            for _ in 0..n {
                map.push((cpu, s as u32));
                cpu += 1;
            }
        }
        Topology::from_map(map)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn joules(a: &Attribution, pid: u32) -> f64 {
        a.process(&key(pid)).expect("process in the split").joules
    }

    #[test]
    fn zero_cpu_zero_energy() {
        let s = sample(vec![bpf(1, vec![0, 0]), procfs(2, 0)], vec![SEC_NS, SEC_NS]);
        for policy in [IdlePolicy::Unattributed, IdlePolicy::Proportional] {
            let a = attribute(&[package(0, 10.0)], &s, &topo(&[2]), SEC, policy);
            assert_eq!(joules(&a, 1), 0.0);
            assert_eq!(joules(&a, 2), 0.0);
            assert_eq!(
                a.host,
                Split {
                    energy: 10.0,
                    attributed: 0.0,
                    unattributed: 10.0
                }
            );
        }
    }

    #[test]
    fn one_busy_cpu_of_two_gets_half_or_all() {
        let s = sample(vec![bpf(1, vec![SEC_NS, 0])], vec![0, SEC_NS]);
        let zones = [package(0, 10.0)];
        let a = attribute(&zones, &s, &topo(&[2]), SEC, IdlePolicy::Unattributed);
        assert!(close(joules(&a, 1), 5.0));
        assert!(close(a.host.unattributed, 5.0));
        assert_eq!(a.pools, vec![(Pool::Socket(0), a.host)]);
        let a = attribute(&zones, &s, &topo(&[2]), SEC, IdlePolicy::Proportional);
        assert!(close(joules(&a, 1), 10.0));
        assert!(close(a.host.unattributed, 0.0));
    }

    #[test]
    fn no_energy_from_a_socket_not_run_on() {
        // CPUs 0-1 on socket 0, 2-3 on socket 1; the process runs on CPU 3 only.
        let s = sample(vec![bpf(1, vec![0, 0, 0, SEC_NS / 2])], vec![]);
        let zones = [
            package(0, 40.0),
            zone(Some(0), DomainKind::Dram, 4.0),
            package(1, 20.0),
            zone(Some(1), DomainKind::Dram, 2.0),
            zone(Some(1), DomainKind::Core, 15.0),
        ];
        for policy in [IdlePolicy::Unattributed, IdlePolicy::Proportional] {
            let a = attribute(&zones, &s, &topo(&[2, 2]), SEC, policy);
            let p = a.process(&key(1)).expect("process in the split");
            assert_eq!(p.per_socket.sockets().collect::<Vec<_>>(), vec![1]);
            let want = match policy {
                IdlePolicy::Unattributed => 22.0 * 0.5 / 2.0,
                IdlePolicy::Proportional => 22.0,
            };
            assert!(close(p.joules, want), "{policy:?}: {}", p.joules);
            assert_eq!(a.pool(Pool::Socket(0)).unwrap().attributed, 0.0);
            assert!(close(a.pool(Pool::Socket(0)).unwrap().unattributed, 44.0));
            assert!(close(a.host.energy, 66.0), "core is not added");
            assert_eq!(a.sockets[&0].measured, 44.0);
            assert_eq!(a.sockets[&1].attributed, p.joules);
        }
    }

    #[test]
    fn psys_is_one_host_pool() {
        let s = sample(
            vec![bpf(1, vec![SEC_NS, 0, 0, 0]), bpf(2, vec![0, 0, SEC_NS, 0])],
            vec![],
        );
        let zones = [
            package(0, 20.0),
            package(1, 10.0),
            zone(None, DomainKind::Psys, 60.0),
        ];
        let a = attribute(&zones, &s, &topo(&[2, 2]), SEC, IdlePolicy::Unattributed);
        assert_eq!(a.pools.len(), 1);
        assert_eq!(a.pools[0].0, Pool::Host);
        // 60 J over 4 CPU-seconds of capacity: 15 J per busy CPU-second.
        assert!(close(joules(&a, 1), 15.0));
        assert!(close(joules(&a, 2), 15.0));
        assert_eq!(
            a.process(&key(2))
                .expect("process in the split")
                .per_socket
                .get(1),
            Some(15.0)
        );
        assert!(close(a.host.energy, 60.0));
        assert!(close(a.host.unattributed, 30.0));
        assert_eq!(a.sockets[&0].measured, 20.0, "informational");
        assert!(close(a.sockets[&0].attributed, 15.0));
    }

    #[test]
    fn procfs_time_follows_socket_busy_time() {
        // Socket 0 busy 1.5 CPU-s of 2, socket 1 busy 0.5 of 2 → 75 % / 25 %.
        let idle = vec![SEC_NS / 2, 0, SEC_NS, SEC_NS / 2];
        let s = sample(vec![procfs(1, SEC_NS)], idle);
        let zones = [package(0, 40.0), package(1, 40.0)];
        let a = attribute(&zones, &s, &topo(&[2, 2]), SEC, IdlePolicy::Unattributed);
        let p = a.process(&key(1)).expect("process in the split");
        assert!(close(
            p.per_socket.get(0).expect("time on socket 0"),
            40.0 * 0.75 / 2.0
        ));
        assert!(close(
            p.per_socket.get(1).expect("time on socket 1"),
            40.0 * 0.25 / 2.0
        ));
        assert!(close(p.joules, 20.0));
    }

    #[test]
    fn procfs_time_by_cpu_count_without_idle_times() {
        let s = sample(vec![procfs(1, 3 * SEC_NS)], vec![]);
        let zones = [package(0, 10.0), package(1, 20.0)];
        let a = attribute(&zones, &s, &topo(&[1, 2]), SEC, IdlePolicy::Unattributed);
        let p = a.process(&key(1)).expect("process in the split");
        // 1 s on the 1-CPU socket, 2 s on the 2-CPU socket: both fully used.
        assert!(close(p.per_socket.get(0).expect("time on socket 0"), 10.0));
        assert!(close(p.per_socket.get(1).expect("time on socket 1"), 20.0));
        assert!(close(a.host.unattributed, 0.0));
    }

    #[test]
    fn times_above_capacity_are_scaled_down() {
        // Two processes claim 0.6 s each of a single CPU's second.
        let s = sample(
            vec![bpf(1, vec![6 * SEC_NS / 10]), bpf(2, vec![6 * SEC_NS / 10])],
            vec![],
        );
        let a = attribute(
            &[package(0, 9.0)],
            &s,
            &topo(&[1]),
            SEC,
            IdlePolicy::Unattributed,
        );
        assert!(close(joules(&a, 1), 4.5));
        assert!(close(joules(&a, 2), 4.5));
        assert_eq!(a.host.unattributed, 0.0);
    }

    #[test]
    fn exited_and_duplicate_processes_count() {
        let mut gone = bpf(1, vec![SEC_NS / 4]);
        gone.exited = true;
        let s = sample(
            vec![gone, bpf(2, vec![SEC_NS / 4]), bpf(2, vec![SEC_NS / 4])],
            vec![],
        );
        let a = attribute(
            &[package(0, 8.0)],
            &s,
            &topo(&[1]),
            SEC,
            IdlePolicy::Unattributed,
        );
        assert!(close(joules(&a, 1), 2.0));
        assert!(
            close(joules(&a, 2), 4.0),
            "entries with the same key add up"
        );
    }

    #[test]
    fn zones_of_unknown_sockets_go_to_a_host_pool() {
        let s = sample(vec![bpf(1, vec![SEC_NS, 0])], vec![]);
        let zones = [
            package(0, 10.0),
            package(7, 4.0),
            zone(None, DomainKind::Dram, 2.0),
        ];
        let a = attribute(&zones, &s, &topo(&[1, 1]), SEC, IdlePolicy::Unattributed);
        let host_pool = a.pool(Pool::Host).unwrap();
        assert!(close(host_pool.energy, 6.0));
        // Whole socket 0 (10 J) + half the host-wide capacity (3 J).
        assert!(close(joules(&a, 1), 13.0));
        assert!(close(a.host.energy, 16.0));
        assert_eq!(a.sockets[&7].measured, 4.0);
    }

    #[test]
    fn time_on_unknown_cpus_is_spread() {
        // CPU 5 is not in the topology (hot-plugged since it was read).
        let s = sample(vec![bpf(1, vec![0, 0, 0, 0, 0, SEC_NS])], vec![]);
        let a = attribute(
            &[package(0, 10.0), package(1, 10.0)],
            &s,
            &topo(&[1, 1]),
            SEC,
            IdlePolicy::Unattributed,
        );
        let p = a.process(&key(1)).expect("process in the split");
        assert!(close(p.per_socket.get(0).expect("time on socket 0"), 5.0));
        assert!(close(p.per_socket.get(1).expect("time on socket 1"), 5.0));
    }

    #[test]
    fn empty_topology_still_conserves() {
        let s = sample(vec![bpf(1, vec![SEC_NS]), procfs(2, SEC_NS)], vec![]);
        let a = attribute(
            &[package(0, 10.0)],
            &s,
            &Topology::from_map(vec![]),
            SEC,
            IdlePolicy::Unattributed,
        );
        assert!(close(
            joules(&a, 1) + joules(&a, 2) + a.host.unattributed,
            10.0
        ));
    }

    #[test]
    fn baseline_interval_splits_nothing() {
        let a = attribute(
            &[],
            &CpuSample::default(),
            &topo(&[2]),
            Duration::ZERO,
            IdlePolicy::Unattributed,
        );
        assert_eq!(a.host, Split::default());
        assert!(a.processes.is_empty());
    }

    /// The sensor undoes a counter wrap before anything reaches attribution.
    #[test]
    fn wrap_is_handled_by_the_sensor_not_here() {
        let dir = write_tree(&[
            File("intel-rapl:0/name", "package-0\n"),
            File("intel-rapl:0/energy_uj", "999000000\n"),
            File("intel-rapl:0/max_energy_range_uj", "1000000000\n"),
        ]);
        let mut sensor = PowercapSensor::new(dir.path()).unwrap();
        let t0 = Instant::now();
        sensor.poll_at(t0).unwrap();
        add(dir.path(), &[File("intel-rapl:0/energy_uj", "3000000\n")]);
        let reading = sensor.poll_at(t0 + SEC).unwrap();
        let s = sample(vec![bpf(1, vec![SEC_NS])], vec![0]);
        let a = attribute(
            &reading.zones,
            &s,
            &topo(&[1]),
            reading.interval,
            IdlePolicy::Unattributed,
        );
        assert!(close(joules(&a, 1), 4.0));
    }

    #[test]
    fn accumulator_counts_up_and_expires() {
        let t = topo(&[2]);
        let zones = [package(0, 10.0), zone(Some(0), DomainKind::Core, 6.0)];
        let mut acc = Accumulator::new();
        let s1 = sample(
            vec![bpf(1, vec![SEC_NS, 0]), bpf(2, vec![0, SEC_NS / 2])],
            vec![],
        );
        acc.add(
            &zones,
            &attribute(&zones, &s1, &t, SEC, IdlePolicy::Unattributed),
            stamp(SEC, 1),
        );
        let s2 = sample(vec![bpf(1, vec![SEC_NS, 0])], vec![]);
        acc.add(
            &zones,
            &attribute(&zones, &s2, &t, SEC, IdlePolicy::Unattributed),
            stamp(2 * SEC, 2),
        );

        assert_eq!(acc.cycles(), 2);
        let host = acc.host();
        assert!(close(host.energy.joules, 20.0));
        assert!(close(
            host.attributed.joules + host.unattributed.joules,
            20.0
        ));
        assert!(close(host.energy.watts, 10.0));
        let p1 = acc.process(&key(1)).unwrap();
        assert!(close(p1.energy.joules, 10.0));
        assert!(close(p1.energy.watts, 5.0));
        assert_eq!((p1.first_seen, p1.last_seen), (SEC, 2 * SEC));
        let p2 = acc.process(&key(2)).unwrap();
        assert!(close(p2.energy.joules, 2.5));
        assert_eq!(p2.energy.watts, 0.0, "not in the last interval");
        assert!(close(acc.added_in_cycle(&key(1), 2).joules, 5.0));
        let nothing = Amounts::default();
        assert_eq!(
            acc.added_in_cycle(&key(1), 1),
            nothing,
            "not the latest cycle"
        );
        assert_eq!(acc.added_in_cycle(&key(2), 2), nothing, "did not run in it");
        assert!(close(acc.sockets()[&0].joules, 20.0));
        let core = DomainKey {
            socket: Some(0),
            kind: DomainKind::Core,
            name: "core".into(),
        };
        assert!(close(acc.domains()[&core].joules, 12.0));
        // 20 J in, 10 + 2.5 J to processes over the two intervals.
        assert!(close(
            acc.unattributed_by_pool()[&Pool::Socket(0)].joules,
            7.5
        ));

        assert_eq!(acc.expire(3 * SEC, 2 * SEC), 0);
        assert_eq!(acc.expire(3 * SEC + SEC / 2, 2 * SEC), 1);
        assert!(acc.process(&key(2)).is_none());
        assert!(acc.process(&key(1)).is_some());
    }

    #[test]
    fn accumulator_ignores_nonsense() {
        let mut acc = Accumulator::new();
        let mut a = Attribution {
            interval: SEC,
            ..Attribution::default()
        };
        a.host = Split {
            energy: 5.0,
            attributed: 0.0,
            unattributed: 5.0,
        };
        acc.add(&[], &a, stamp(SEC, 1));
        a.host.energy = f64::NAN;
        acc.add(&[], &a, stamp(2 * SEC, 2));
        a.host.energy = -3.0;
        acc.add(&[], &a, stamp(3 * SEC, 3));
        assert_eq!(acc.host().energy.joules, 5.0);
        assert_eq!(acc.regressions(), 2, "both refusals are counted");
        acc.add(
            &[package(0, -1.0)],
            &Attribution::default(),
            stamp(4 * SEC, 4),
        );
        assert_eq!(acc.regressions(), 3, "a negative zone delta too");
    }

    /// Every counter's grams grow by its joules of the interval at that
    /// interval's intensity (a new intensity applies only to later joules),
    /// so processes + idle = host in grams as in joules.
    #[test]
    fn grams_follow_each_intervals_intensity() {
        let t = topo(&[2]);
        let zones = [package(0, 360.0)];
        let s = sample(vec![bpf(1, vec![SEC_NS, 0])], vec![]);
        let a = attribute(&zones, &s, &t, SEC, IdlePolicy::Unattributed);
        let mut acc = Accumulator::new();
        let mut want = 0.0;
        let intensities = [Some(360.0), Some(36.0), None, Some(0.0), Some(5000.0)];
        for (cycle, intensity) in (1u32..).zip(intensities) {
            let stamp = Stamp {
                now: SEC * cycle,
                cycle: cycle.into(),
                grams_per_kwh: intensity,
            };
            acc.add(&zones, &a, stamp);
            want += intensity.map_or(0.0, |i| 360.0 * i / 3.6e6);
            assert!(close(acc.host().energy.grams, want), "cycle {cycle}");
            assert!(close(acc.sockets()[&0].grams, want));
            let process = acc.process(&key(1)).expect("process").energy.grams;
            let idle = acc.unattributed_by_pool()[&Pool::Socket(0)].grams;
            assert!(close(process + idle, want), "cycle {cycle}");
            let added = acc.added_in_cycle(&key(1), cycle.into());
            assert!(close(
                added.grams,
                intensity.map_or(0.0, |i| 180.0 * i / 3.6e6)
            ));
        }
    }

    /// A random host and interval, for the property tests.
    #[derive(Clone, Debug)]
    struct World {
        topology: Topology,
        sample: CpuSample,
        zones: Vec<ZoneEnergy>,
        policy: IdlePolicy,
    }

    fn world() -> impl Strategy<Value = World> {
        (
            prop::collection::vec(1_usize..=8, 1..=4),
            1_000_000_u64..=2 * SEC_NS,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_flat_map(
                |(cpus_per_socket, interval_ns, psys, orphan, proportional)| {
                    let n_cpus: usize = cpus_per_socket.iter().sum();
                    let n_sockets = cpus_per_socket.len();
                    // Up to 110 % of the interval on one CPU: clocks disagree slightly.
                    let max_ns = interval_ns + interval_ns / 10;
                    let per_cpu = prop::collection::vec(
                        prop_oneof![2 => Just(0_u64), 1 => 0..=max_ns],
                        n_cpus,
                    );
                    let process = (any::<bool>(), per_cpu, 0..=max_ns * n_cpus as u64);
                    let sockets: Vec<u32> = cpus_per_socket
                        .iter()
                        .enumerate()
                        .flat_map(|(s, &n)| std::iter::repeat_n(s as u32 * 2, n))
                        .collect();
                    (
                        Just(sockets).prop_shuffle(),
                        Just(interval_ns),
                        prop::collection::vec(process, 0..10),
                        prop::collection::vec(
                            (
                                0.0..500.0_f64,
                                prop::option::of(0.0..100.0_f64),
                                0.0..50.0_f64,
                            ),
                            n_sockets,
                        ),
                        prop::option::of(prop::collection::vec(0..=interval_ns, n_cpus)),
                        (Just(psys), 0.0..1000.0_f64),
                        (Just(orphan), 0.0..50.0_f64),
                        Just(proportional),
                    )
                },
            )
            .prop_map(
                |(sockets, interval_ns, processes, energies, idle, psys, orphan, proportional)| {
                    let topology = Topology::from_map(
                        sockets
                            .iter()
                            .enumerate()
                            .map(|(cpu, &s)| (cpu as u32, s))
                            .collect(),
                    );
                    let mut zones = Vec::new();
                    for (&socket, &(pkg, dram, core)) in topology.sockets().iter().zip(&energies) {
                        zones.push(package(socket, pkg));
                        zones.push(zone(Some(socket), DomainKind::Core, core));
                        if let Some(dram) = dram {
                            zones.push(zone(Some(socket), DomainKind::Dram, dram));
                        }
                    }
                    if psys.0 {
                        zones.push(zone(None, DomainKind::Psys, psys.1));
                    }
                    if orphan.0 {
                        zones.push(package(99, orphan.1));
                    }
                    let processes = processes
                        .into_iter()
                        .enumerate()
                        .map(|(i, (has_cpus, per_cpu, total))| {
                            if has_cpus {
                                bpf(i as u32, per_cpu)
                            } else {
                                procfs(i as u32, total)
                            }
                        })
                        .collect();
                    let sample = CpuSample {
                        interval: Duration::from_nanos(interval_ns),
                        processes,
                        idle_ns: idle.unwrap_or_default(),
                        ..CpuSample::default()
                    };
                    let policy = if proportional {
                        IdlePolicy::Proportional
                    } else {
                        IdlePolicy::Unattributed
                    };
                    World {
                        topology,
                        sample,
                        zones,
                        policy,
                    }
                },
            )
    }

    fn near(a: f64, b: f64, scale: f64) -> bool {
        (a - b).abs() <= 1e-9 * scale.max(1.0)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn energy_is_conserved(w in world()) {
            let a = attribute(&w.zones, &w.sample, &w.topology, w.sample.interval, w.policy);
            let host = host_joules(&w.zones);
            prop_assert!(near(a.host.energy, host, host), "host {} != {}", a.host.energy, host);
            let processes: f64 = a.processes.iter().map(|(_, p)| p).map(|p| p.joules).sum();
            prop_assert!(near(processes, a.host.attributed, host));
            prop_assert!(near(processes + a.host.unattributed, host, host));
            prop_assert!(near(a.pools.iter().map(|(_, s)| s.energy).sum::<f64>(), host, host));

            for (pool, split) in &a.pools {
                prop_assert!(split.energy >= 0.0 && split.attributed >= 0.0 && split.unattributed >= 0.0, "{pool:?} {split:?}");
                prop_assert!(near(split.attributed + split.unattributed, split.energy, split.energy), "{pool:?} {split:?}");
                // Without a host-wide pool, a socket's processes got exactly its pool.
                if let (Pool::Socket(s), None) = (pool, a.pool(Pool::Host)) {
                    prop_assert!(near(a.sockets[s].attributed, split.attributed, split.energy));
                }
            }
            for (s, socket) in &a.sockets {
                let on_socket: f64 = a.processes.iter().map(|(_, p)| p).filter_map(|p| p.per_socket.get(*s)).sum();
                prop_assert!(near(on_socket, socket.attributed, host));
            }
            let by_socket: f64 = a.sockets.values().map(|s| s.attributed).sum();
            prop_assert!(near(by_socket, a.host.attributed, host));
            for p in a.processes.iter().map(|(_, p)| p) {
                prop_assert!(p.joules.is_finite() && p.joules >= 0.0);
                prop_assert!(p.per_socket.values().all(|j| j >= 0.0));
                prop_assert!(near(p.per_socket.values().sum::<f64>(), p.joules, host));
            }
        }

        #[test]
        fn idle_processes_get_nothing_and_policies_differ_as_documented(w in world()) {
            let a = attribute(&w.zones, &w.sample, &w.topology, w.sample.interval, w.policy);
            for s in &w.sample.processes {
                let time = if s.per_cpu_ns.is_empty() { s.total_ns } else { s.per_cpu_ns.sum() };
                if time == 0 {
                    prop_assert_eq!(a.process(&s.key).expect("every sampled process").joules, 0.0);
                }
            }
            let proportional = attribute(&w.zones, &w.sample, &w.topology, w.sample.interval, IdlePolicy::Proportional);
            let unattributed = attribute(&w.zones, &w.sample, &w.topology, w.sample.interval, IdlePolicy::Unattributed);
            let host = proportional.host.energy;
            prop_assert!(proportional.host.attributed + 1e-9 * host.max(1.0) >= unattributed.host.attributed);
            for (key, p) in &unattributed.processes {
                prop_assert!(p.joules <= proportional.process(key).expect("same processes").joules + 1e-9 * host.max(1.0));
            }
        }
    }
}
