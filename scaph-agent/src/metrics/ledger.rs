//! Which processes get their own series, and the bookkeeping that keeps every
//! exposed counter monotonic while processes start, exit, expire and move in
//! and out of the top N.
//!
//! The invariant, at every update: Σ listed process counters + the `others`
//! counter = Σ energy of every process the agent ever saw (live, exited,
//! retired) = host − idle. Three rules keep it without any counter going
//! backwards:
//!
//! - `others` = everything not in a listed series. It only ever grows: energy
//!   enters it (a process not listed, a listed one that is dropped, a retired
//!   one) and never leaves it.
//! - A process that gets its own series after time spent in `others` starts
//!   its series from what it used since: its earlier energy stays in `others`.
//! - A listed process that loses its place is *folded* for good: its whole
//!   total moves into `others`, and it is never listed again (listing it again
//!   would mean taking its energy back out of `others`).
//!
//! Ranking uses a one-minute moving average of power (CPU share without an
//! energy source), so a process that pauses for one cycle is not folded.
//!
//! The ledger reads the snapshot's per-process *totals* and turns them back
//! into per-update growth, although the agent computed per-cycle amounts:
//! an exporter's channel keeps only the latest snapshot, so the ledger must
//! merge the cycles it did not see, and only totals survive a skipped
//! snapshot. Which processes are listed, and so what `others` holds, is a
//! choice of the exposition (`--max-processes`), not a measurement.
//!
//! Inputs that would make a counter go backwards (a process's totals lower
//! than at the previous update, `others` shrinking by more than float
//! rounding of the totals) are held at the old value and counted in
//! [`Ledger::regressions`], once per hold.
use std::collections::BTreeMap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::regressions::Regressions;
pub use crate::amounts::Amounts;
use crate::{
    attribution::beyond_rounding,
    snapshot::{ProcessKey, ProcessSnapshot, Snapshot},
};

/// Time constant of the ranking average, seconds.
const RANK_TAU_SECS: f64 = 60.0;

/// `now` is lower than `before`, or not a number (held as well).
fn below(now: f64, before: f64) -> bool {
    now < before || now.is_nan()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exposure {
    /// Never had its own series: everything it used is in `others`.
    Unlisted,
    /// Has its own series.
    Listed,
    /// Had its own series and lost its place: in `others` for good.
    Folded,
}

#[derive(Clone, Debug)]
struct Entry {
    exposure: Exposure,
    /// What was already in `others` when the process got its own series.
    offset: Amounts,
    /// Totals at the latest update.
    last: Amounts,
    /// Smoothed power (watts) or CPU share, for ranking.
    rank: f64,
    generation: u64,
    /// Its place in the snapshot of `generation`.
    index: usize,
    /// Energy and CPU time are held at `last` (input below it): counted
    /// once, when the hold starts.
    held: [bool; 2],
}

/// What one update decided, borrowed from the snapshot.
#[derive(Debug)]
pub struct View<'a> {
    /// Processes with their own series, by pid.
    pub listed: Vec<ListedProcess<'a>>,
    /// Everything else.
    pub others: Amounts,
    /// Per executable (`--per-exe`), by name; `""` also holds groups with no process left.
    pub by_exe: Vec<(String, Amounts)>,
    /// Per cgroup (`--per-cgroup`), same rules.
    pub by_cgroup: Vec<(String, Amounts)>,
}

#[derive(Debug)]
pub struct ListedProcess<'a> {
    pub process: &'a ProcessSnapshot,
    /// The values of its series.
    pub amounts: Amounts,
}

/// Counters per group, fed with per-update deltas so they never shrink.
#[derive(Debug, Default)]
struct Groups {
    groups: BTreeMap<String, (Amounts, u64)>,
}

impl Groups {
    fn add(&mut self, key: String, delta: Amounts, generation: u64) {
        let slot = self.groups.entry(key).or_default();
        slot.0.add(delta);
        slot.1 = generation;
    }

    /// Groups with no process this update hand their totals to `""`.
    fn close(&mut self, generation: u64) -> Vec<(String, Amounts)> {
        let gone: Vec<String> = self
            .groups
            .iter()
            .filter(|(k, (_, g))| *g != generation && !k.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some((amounts, _)) = self.groups.remove(&key) {
                self.groups.entry(String::new()).or_default().0.add(amounts);
            }
        }
        self.groups
            .iter()
            .map(|(k, (a, _))| (k.clone(), *a))
            .collect()
    }
}

/// The state kept between updates.
#[derive(Debug)]
pub struct Ledger {
    max_listed: usize,
    per_exe: bool,
    per_cgroup: bool,
    entries: HashMap<ProcessKey, Entry>,
    generation: u64,
    /// CPU seconds of processes no longer in the snapshot (the snapshot
    /// keeps the joules and grams of those, not their CPU time).
    retired_cpu_seconds: f64,
    others: Amounts,
    exe: Groups,
    cgroup: Groups,
    regressions: Regressions,
    /// `others`' energy and CPU time are held (see [`Entry::held`]).
    others_held: [bool; 2],
    /// Reused by every update (see [`Ledger::update`]).
    totals: Vec<Amounts>,
}

impl Ledger {
    #[must_use]
    pub fn new(max_listed: usize, per_exe: bool, per_cgroup: bool) -> Self {
        Self {
            max_listed,
            per_exe,
            per_cgroup,
            entries: HashMap::default(),
            generation: 0,
            retired_cpu_seconds: 0.0,
            others: Amounts::default(),
            exe: Groups::default(),
            cgroup: Groups::default(),
            regressions: Regressions::default(),
            others_held: [false; 2],
            totals: Vec::new(),
        }
    }

    /// Folds one snapshot in. Snapshots must come in order; skipping some is
    /// fine (deltas merge), as long as each process is seen once before it
    /// is retired, which the retention window (minutes) ensures.
    pub fn update<'a>(&mut self, snap: &'a Snapshot) -> View<'a> {
        self.generation += 1;
        let generation = self.generation;
        let secs = snap.interval.as_secs_f64();
        let alpha = if secs > 0.0 {
            1.0 - (-secs / RANK_TAU_SECS).exp()
        } else {
            1.0
        };
        // Each process's totals in snapshot order, summed below: kept
        // here instead of looked up again in `entries`.
        let mut totals = std::mem::take(&mut self.totals);
        totals.clear();
        for (index, p) in snap.processes.iter().enumerate() {
            let now = Amounts {
                joules: p.energy.map_or(0.0, |e| e.joules_total),
                cpu_seconds: p.cpu_seconds_total,
                grams: p.co2_grams_total,
            };
            let rate = p.energy.map_or(p.cpu_ratio, |e| e.watts);
            let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
            let entry = self.entries.entry(p.key).or_insert(Entry {
                exposure: Exposure::Unlisted,
                offset: Amounts::default(),
                last: Amounts::default(),
                rank: rate,
                generation,
                index,
                held: [false; 2],
            });
            for (i, source, what, now, before) in [
                (
                    0,
                    "processes' energy",
                    "energy",
                    now.joules,
                    entry.last.joules,
                ),
                (
                    1,
                    "processes' CPU time",
                    "CPU seconds",
                    now.cpu_seconds,
                    entry.last.cpu_seconds,
                ),
            ] {
                let held = below(now, before);
                if held && !entry.held[i] {
                    self.regressions.note(
                        source,
                        || format!("{what} of pid {}", p.key.pid),
                        before,
                        now,
                    );
                }
                entry.held[i] = held;
            }
            if entry.exposure == Exposure::Unlisted {
                entry.offset = entry.last;
            }
            let delta = Amounts::advance(&mut entry.last, now);
            totals.push(entry.last);
            entry.rank += alpha * (rate - entry.rank);
            entry.generation = generation;
            entry.index = index;
            if self.per_exe {
                self.exe.add(super::labels::exe(p), delta, generation);
            }
            if self.per_cgroup {
                // Grouped by the bounded value, so two long names that are cut
                // alike make one series, never two with the same labels.
                self.cgroup.add(
                    crate::label::path(p.cgroup_path().map_or("", |path| &**path)),
                    delta,
                    generation,
                );
            }
        }
        // Sums in key or snapshot order, never map order: the same input must
        // give the same floats (golden files, and no jitter between updates).
        let mut gone: Vec<(ProcessKey, Amounts)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.generation != generation)
            .map(|(k, e)| (*k, e.last))
            .collect();
        gone.sort_by_key(|(k, _)| *k);
        let mut retired = Amounts::default();
        for (_, last) in &gone {
            retired.add(*last);
        }
        self.retired_cpu_seconds += retired.cpu_seconds;
        self.entries.retain(|_, e| e.generation == generation);
        crate::util::shrink_if_sparse(&mut self.entries);

        self.select();

        let mut listed: Vec<ListedProcess<'a>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.exposure == Exposure::Listed)
            .filter_map(|(k, e)| {
                Some(ListedProcess {
                    process: snap.processes.get(e.index).filter(|p| p.key == *k)?,
                    amounts: e.last.minus(e.offset),
                })
            })
            .collect();
        listed.sort_by_key(|l| l.process.key);

        let mut everything = Amounts {
            joules: snap.retired_joules,
            cpu_seconds: self.retired_cpu_seconds,
            grams: snap.co2.as_ref().map_or(0.0, |c| c.retired),
        };
        for last in &totals {
            everything.add(*last);
        }
        self.totals = totals;
        let mut in_listed = Amounts::default();
        for l in &listed {
            in_listed.add(l.amounts);
        }
        // max(): float rounding must never show as a decrease (Prometheus
        // reads any decrease as a reset); more than rounding is a regression.
        // `others` is the difference of two sums added in different orders,
        // so its rounding grows with the sums: the tolerance is relative to
        // `everything`, not to `others`. Compared before minus() clamps at 0:
        // listed series holding more than everything would be a bug too.
        for (i, name, now, before, scale) in [
            (
                0,
                "others' energy",
                everything.joules - in_listed.joules,
                self.others.joules,
                everything.joules,
            ),
            (
                1,
                "others' CPU time",
                everything.cpu_seconds - in_listed.cpu_seconds,
                self.others.cpu_seconds,
                everything.cpu_seconds,
            ),
        ] {
            let held = now.is_nan() || beyond_rounding(before - now, scale);
            if held && !self.others_held[i] {
                self.regressions.note(name, || name.to_owned(), before, now);
            }
            self.others_held[i] = held;
        }
        let others = everything.minus(in_listed);
        self.others = others.max(self.others);

        View {
            listed,
            others: self.others,
            by_exe: if self.per_exe {
                self.exe.close(generation)
            } else {
                Vec::new()
            },
            by_cgroup: if self.per_cgroup {
                self.cgroup.close(generation)
            } else {
                Vec::new()
            },
        }
    }

    /// Inputs held back so that no counter went backwards.
    #[must_use]
    pub fn regressions(&self) -> u64 {
        self.regressions.total()
    }

    /// Picks the top `max_listed` by rank among processes that may be
    /// listed, one per pid (a label set must be unique); listed processes
    /// that lose their place are folded.
    fn select(&mut self) {
        let mut candidates: Vec<(&ProcessKey, &Entry)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.exposure != Exposure::Folded)
            .collect();
        // A total order (keys are unique): any sort gives the same list.
        let by_rank = |(ka, a): &(&ProcessKey, &Entry), (kb, b): &(&ProcessKey, &Entry)| {
            b.rank
                .total_cmp(&a.rank)
                .then_with(|| {
                    (b.exposure == Exposure::Listed).cmp(&(a.exposure == Exposure::Listed))
                })
                .then_with(|| kb.start_ns.cmp(&ka.start_ns))
                .then_with(|| ka.cmp(kb))
        };
        // Only the first places are looked at: those are sorted, the rest
        // only if pids shared by several keys leave places free.
        let mut sorted = self
            .max_listed
            .saturating_add(self.max_listed / 8 + 16)
            .min(candidates.len());
        if sorted < candidates.len() {
            candidates.select_nth_unstable_by(sorted, by_rank);
        }
        candidates[..sorted].sort_unstable_by(by_rank);
        let mut pids = HashSet::default();
        let mut chosen = HashSet::default();
        for i in 0..candidates.len() {
            if chosen.len() >= self.max_listed {
                break;
            }
            if i == sorted {
                candidates[sorted..].sort_unstable_by(by_rank);
                sorted = candidates.len();
            }
            let key = candidates[i].0;
            if pids.insert(key.pid) {
                chosen.insert(*key);
            }
        }
        for (key, entry) in &mut self.entries {
            entry.exposure = match (entry.exposure, chosen.contains(key)) {
                (Exposure::Unlisted | Exposure::Listed, true) => Exposure::Listed,
                (Exposure::Listed | Exposure::Folded, false) => Exposure::Folded,
                (Exposure::Unlisted, false) => Exposure::Unlisted,
                (Exposure::Folded, true) => Exposure::Folded,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::snapshot::{Energy, Snapshot};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs()))
    }

    /// A tiny agent model: processes with cumulative joules/cpu, exits and
    /// expiry into `retired_joules`.
    #[derive(Default)]
    struct World {
        live: BTreeMap<ProcessKey, (f64, f64, f64, bool)>, // joules, cpu, watts, exited
        retired: f64,
        retired_cpu: f64,
    }

    impl World {
        fn snapshot(&self) -> Snapshot {
            let processes = self
                .live
                .iter()
                .map(|(k, &(j, c, w, exited))| ProcessSnapshot {
                    key: *k,
                    comm: format!("p{}", k.pid).into(),
                    meta: Some(std::sync::Arc::new(crate::model::ProcessMeta {
                        exe: Some(std::path::PathBuf::from(format!("/bin/p{}", k.pid % 3)).into()),
                        cgroup_path: Some(format!("/g{}", k.pid % 2).into()),
                        ..crate::model::ProcessMeta::default()
                    })),
                    cgroup_id: None,
                    cpu_seconds_total: c,
                    cpu_ratio: 0.0,
                    energy: Some(Energy {
                        joules_total: j,
                        watts: w,
                    }),
                    co2_grams_total: 0.0,
                    exited,
                    memory: None,
                    workload: None,
                })
                .collect();
            Snapshot::of_processes(
                processes,
                self.retired,
                crate::snapshot::CpuTimeMethod::Procfs,
            )
        }

        fn total(&self) -> (f64, f64) {
            let j: f64 = self.live.values().map(|v| v.0).sum::<f64>() + self.retired;
            let c: f64 = self.live.values().map(|v| v.1).sum::<f64>() + self.retired_cpu;
            (j, c)
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// pid (small pool, so reuse happens); the start time is always new
        Spawn(u32),
        /// index into live processes, joules, cpu
        Run(usize, f64, f64),
        Exit(usize),
        Expire(usize),
        Tick,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u32..12).prop_map(Step::Spawn),
            (0usize..16, 0.0f64..50.0, 0.0f64..3.0).prop_map(|(i, j, c)| Step::Run(i, j, c)),
            (0usize..16).prop_map(Step::Exit),
            (0usize..16).prop_map(Step::Expire),
            Just(Step::Tick),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn counters_never_decrease_and_totals_hold(steps in prop::collection::vec(step(), 1..80), max in 0usize..5, per in any::<bool>()) {
            let mut world = World::default();
            let mut ledger = Ledger::new(max, per, per);
            let mut series: HashMap<ProcessKey, Amounts> = HashMap::new();
            let mut folded: HashSet<ProcessKey> = HashSet::default();
            let mut others = Amounts::default();
            let mut groups: HashMap<(bool, String), f64> = HashMap::new();
            for (n, step) in steps.into_iter().enumerate() {
                for v in world.live.values_mut() { v.2 = 0.0; }
                match step {
                    Step::Spawn(pid) => { world.live.insert(ProcessKey { pid, start_ns: n as u64 }, (0.0, 0.0, 0.0, false)); }
                    Step::Run(i, j, c) => if let Some(v) = world.live.values_mut().filter(|v| !v.3).nth(i) { v.0 += j; v.1 += c; v.2 = j / 2.0; },
                    Step::Exit(i) => if let Some(v) = world.live.values_mut().nth(i) { v.3 = true; },
                    Step::Expire(i) => {
                        let key = world.live.iter().filter(|(_, v)| v.3).map(|(k, _)| *k).nth(i);
                        if let Some(k) = key { let v = world.live.remove(&k).unwrap(); world.retired += v.0; world.retired_cpu += v.1; }
                    }
                    Step::Tick => {}
                }
                let snap = world.snapshot();
                let view = ledger.update(&snap);
                prop_assert!(view.listed.len() <= max);
                let pids: HashSet<u32> = view.listed.iter().map(|l| l.process.key.pid).collect();
                prop_assert_eq!(pids.len(), view.listed.len(), "one series per pid");
                for l in &view.listed {
                    prop_assert!(!folded.contains(&l.process.key), "a folded process came back");
                    let before = series.get(&l.process.key).copied().unwrap_or_default();
                    prop_assert!(l.amounts.joules >= before.joules && l.amounts.cpu_seconds >= before.cpu_seconds);
                    series.insert(l.process.key, l.amounts);
                }
                for key in series.keys() {
                    if !view.listed.iter().any(|l| l.process.key == *key) { folded.insert(*key); }
                }
                prop_assert!(view.others.joules >= others.joules && view.others.cpu_seconds >= others.cpu_seconds);
                prop_assert_eq!(ledger.regressions(), 0, "an honest history is never held back");
                others = view.others;
                let (j, c) = world.total();
                let listed_j: f64 = view.listed.iter().map(|l| l.amounts.joules).sum();
                let listed_c: f64 = view.listed.iter().map(|l| l.amounts.cpu_seconds).sum();
                prop_assert!(close(listed_j + view.others.joules, j), "{} + {} != {}", listed_j, view.others.joules, j);
                prop_assert!(close(listed_c + view.others.cpu_seconds, c));
                for (is_exe, list) in [(true, &view.by_exe), (false, &view.by_cgroup)] {
                    if per {
                        let sum: f64 = list.iter().map(|(_, a)| a.joules).sum();
                        prop_assert!(close(sum, j), "groups {} != {}", sum, j);
                    }
                    // A group that closed (no process for the retention window) and
                    // comes back later is a new series; while listed, it only grows.
                    groups.retain(|(exe, name), _| *exe != is_exe || list.iter().any(|(n, _)| n == name));
                    for (name, a) in list {
                        let before = groups.insert((is_exe, name.clone()), a.joules).unwrap_or(0.0);
                        prop_assert!(a.joules >= before);
                    }
                }
            }
        }
    }

    /// Shuffles `items` with a small xorshift seeded by `seed`.
    fn shuffle<T>(items: &mut [T], mut seed: u64) {
        for i in (1..items.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            items.swap(i, (seed % (i as u64 + 1)) as usize);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// `others` is everything minus the listed series, two sums of
        /// hundreds of terms added in different orders (snapshot order and
        /// key order): with 1e6–1e7 J in all, its rounding is many times
        /// 1e-9 × a small `others`, and must not read as a regression.
        #[test]
        fn rounding_of_large_totals_is_not_a_regression(
            start in prop::collection::vec((1e3f64..5e4, 1.0f64..1e4), 200..400),
            growth in 0.0f64..1.0,
            seeds in prop::collection::vec(1u64.., 2..12),
            max in prop_oneof![Just(usize::MAX), 0usize..400],
        ) {
            let mut world = World {
                retired: 0.5,
                ..World::default()
            };
            for (pid, (joules, cpu)) in (1u32..).zip(start) {
                world.live.insert(ProcessKey { pid, start_ns: 1 }, (joules, cpu, 1.0, false));
            }
            let mut ledger = Ledger::new(max, false, false);
            for seed in seeds {
                for v in world.live.values_mut() {
                    v.0 += growth;
                    v.1 += growth / 100.0;
                }
                let mut snap = world.snapshot();
                shuffle(&mut snap.processes, seed);
                ledger.update(&snap);
                prop_assert_eq!(ledger.regressions(), 0);
            }
        }
    }

    /// A process's total lower than before is held until the input catches
    /// up: counted once per hold, not at every update of it.
    #[test]
    fn a_held_process_counts_once_per_hold() {
        let mut world = World::default();
        world.live.extend([one(1, 10.0, 1.0)]);
        let mut ledger = Ledger::new(usize::MAX, false, false);
        let key = ProcessKey {
            pid: 1,
            start_ns: 1,
        };
        let joules = [10.0, 8.0, 8.5, 9.0, 10.5, 10.0, 11.0];
        let want = [0, 1, 1, 1, 1, 2, 2];
        for (j, want) in joules.into_iter().zip(want) {
            world.live.get_mut(&key).expect("live").0 = j;
            ledger.update(&world.snapshot());
            assert_eq!(ledger.regressions(), want, "at {j} J");
        }
    }

    fn one(pid: u32, joules: f64, watts: f64) -> (ProcessKey, (f64, f64, f64, bool)) {
        (
            ProcessKey { pid, start_ns: 1 },
            (joules, joules / 10.0, watts, false),
        )
    }

    #[test]
    fn late_comer_series_starts_from_its_own_use_and_displaced_ones_stay_folded() {
        let mut world = World::default();
        world.live.extend([one(1, 100.0, 50.0), one(2, 10.0, 5.0)]);
        let mut ledger = Ledger::new(1, false, false);
        let snap = world.snapshot();
        let view = ledger.update(&snap);
        assert_eq!(view.listed.len(), 1);
        assert_eq!(view.listed[0].process.key.pid, 1);
        assert!(
            close(view.listed[0].amounts.joules, 100.0),
            "first sight: whole total"
        );
        assert!(close(view.others.joules, 10.0));

        // pid 2 becomes much hotter for long enough to overtake pid 1's average.
        for i in 1..=60 {
            world
                .live
                .get_mut(&ProcessKey {
                    pid: 2,
                    start_ns: 1,
                })
                .unwrap()
                .0 = 10.0 + 1000.0 * f64::from(i);
            world
                .live
                .get_mut(&ProcessKey {
                    pid: 2,
                    start_ns: 1,
                })
                .unwrap()
                .2 = 500.0;
            world
                .live
                .get_mut(&ProcessKey {
                    pid: 1,
                    start_ns: 1,
                })
                .unwrap()
                .2 = 0.0;
            let snap = world.snapshot();
            let view = ledger.update(&snap);
            if view.listed[0].process.key.pid == 2 {
                // Its series starts with the cycle it was listed in; its past stays in others.
                assert!(
                    view.listed[0].amounts.joules <= 1000.0 + 1e-9,
                    "{}",
                    view.listed[0].amounts.joules
                );
                assert!(view.others.joules >= 100.0, "pid 1 folded into others");
                // pid 1 heats up again: it stays folded.
                world
                    .live
                    .get_mut(&ProcessKey {
                        pid: 1,
                        start_ns: 1,
                    })
                    .unwrap()
                    .2 = 1e6;
                let snap = world.snapshot();
                let view = ledger.update(&snap);
                assert_eq!(view.listed[0].process.key.pid, 2);
                return;
            }
        }
        panic!("pid 2 never overtook pid 1");
    }

    #[test]
    fn unlimited_lists_every_process_with_its_full_total() {
        let mut world = World::default();
        world
            .live
            .extend([one(1, 3.0, 1.0), one(2, 4.0, 1.0), one(3, 0.0, 0.0)]);
        let mut ledger = Ledger::new(usize::MAX, true, false);
        let snap = world.snapshot();
        let view = ledger.update(&snap);
        assert_eq!(view.listed.len(), 3);
        assert_eq!(view.others, Amounts::default());
        assert_eq!(view.by_exe.len(), 3);
    }

    #[test]
    fn retired_processes_move_into_others() {
        let mut world = World::default();
        world.live.extend([one(1, 3.0, 1.0), one(2, 4.0, 1.0)]);
        let mut ledger = Ledger::new(usize::MAX, true, false);
        ledger.update(&world.snapshot());
        let gone = world
            .live
            .remove(&ProcessKey {
                pid: 2,
                start_ns: 1,
            })
            .unwrap();
        world.retired += gone.0;
        let snap = world.snapshot();
        let view = ledger.update(&snap);
        assert_eq!(view.listed.len(), 1);
        assert!(close(view.others.joules, 4.0));
        assert!(close(view.others.cpu_seconds, 0.4));
        assert!(
            view.by_exe
                .iter()
                .any(|(k, a)| k.is_empty() && close(a.joules, 4.0)),
            "{:?}",
            view.by_exe
        );
    }
}
