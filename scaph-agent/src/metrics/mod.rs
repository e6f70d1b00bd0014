//! The metrics scaph exposes, built from one `Snapshot` at a time.
//!
//! - [`names`]: every metric's name, type, unit and help text.
//! - [`ledger`]: which processes get their own series, and the bookkeeping
//!   that keeps counters monotonic and the totals right.
//! - [`labels`]: the labels collectors share (a leaf).
//! - [`collect`]: one function per collector turning a snapshot into families.
//! - [`containers`]: container labels and series, formatted from what the
//!   agent resolved (the snapshot's workloads and container totals).
//! - [`text`]: the Prometheus text encoding.
//!
//! [`MetricsState`] is fed every snapshot, in order, by the exporter that
//! owns it (never by a scrape), so the ledger sees every process.
mod carbon;
pub mod collect;
mod compat;
pub mod containers;
pub mod labels;
pub mod ledger;
pub mod names;
pub mod regressions;
pub mod text;

use std::{
    collections::HashMap,
    hash::{Hash as _, Hasher as _},
    time::Instant,
};

pub use text::{encode, Family, Sample, CONTENT_TYPE};

use crate::snapshot::Snapshot;

/// Default of `--max-processes`.
pub const DEFAULT_MAX_PROCESSES: usize = 500;
/// `--cmdline-max-len` with `--scaphandre-compat` when not given (without
/// compat there is no `cmdline` label unless asked for).
pub const DEFAULT_CMDLINE_MAX_LEN: usize = 128;

/// What to expose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Also Scaphandre's names and labels.
    pub compat: bool,
    /// Processes with their own series; the rest are summed in one series.
    pub max_processes: usize,
    /// Longest `cmdline` label, in characters; 0 leaves the label out.
    pub cmdline_max_len: usize,
    /// Counters per executable.
    pub per_exe: bool,
    /// Counters per cgroup.
    pub per_cgroup: bool,
    /// Add a `vmname` label to qemu processes (Scaphandre's `--qemu`).
    pub qemu: bool,
    /// `--containers`: container labels on process series, and
    /// `scaph_container_*`.
    pub containers: Option<ContainerLabels>,
}

/// What the metrics need of `--containers`: the agent resolves containers
/// (`Agent::with_containers`, with the only `ContainersConfig`), the metrics
/// only show them, with the node's name in Scaphandre's labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerLabels {
    /// `--node-name`.
    pub node_name: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            compat: false,
            max_processes: DEFAULT_MAX_PROCESSES,
            cmdline_max_len: 0,
            per_exe: false,
            per_cgroup: false,
            qemu: false,
            containers: None,
        }
    }
}

/// The metrics' state across snapshots.
#[derive(Debug)]
pub struct MetricsState {
    config: MetricsConfig,
    ledger: ledger::Ledger,
    /// Last exposed value of every counter series, by [`series_id`], and
    /// whether it was held at that value.
    counters: HashMap<u128, (f64, bool)>,
    /// Counters held at their last value by [`MetricsState::guard_counters`].
    regressions: regressions::Regressions,
    /// The snapshot's count of refused energy amounts (logged by the agent).
    energy_regressions: u64,
    /// Measure collector durations (off only for reproducible test output).
    timed: bool,
}

impl MetricsState {
    #[must_use]
    pub fn new(config: MetricsConfig) -> Self {
        let ledger = ledger::Ledger::new(config.max_processes, config.per_exe, config.per_cgroup);
        Self {
            config,
            ledger,
            counters: HashMap::new(),
            regressions: regressions::Regressions::default(),
            energy_regressions: 0,
            timed: true,
        }
    }

    /// Reports every collector duration as 0, so output is reproducible.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn untimed(mut self) -> Self {
        self.timed = false;
        self
    }

    #[must_use]
    pub fn config(&self) -> &MetricsConfig {
        &self.config
    }

    /// What to show before the first measurement: build information and
    /// every collector marked unsuccessful.
    #[must_use]
    pub fn before_first_measurement(&self) -> Vec<Family> {
        let mut families = vec![collect::build_info()];
        let outcomes: Vec<collect::Outcome> = self
            .collectors()
            .iter()
            .map(|&name| collect::Outcome {
                name,
                success: false,
                seconds: 0.0,
            })
            .collect();
        families.extend(collect::collector_families(&outcomes));
        families.push(self.regressions_family());
        families
    }

    /// `scaph_monotonicity_violations_total`: every counter held at its last
    /// value, here, in the ledger or in the energy accumulator.
    fn regressions_family(&self) -> Family {
        let total = self
            .regressions
            .total()
            .saturating_add(self.ledger.regressions())
            .saturating_add(self.energy_regressions);
        Family::single(&names::MONOTONICITY_VIOLATIONS, total as f64)
    }

    /// Folds a snapshot in and returns every family to expose.
    pub fn update(&mut self, snap: &Snapshot) -> Vec<Family> {
        let config = &self.config;
        let mut outcomes = Vec::new();
        let mut families = collect::meta(snap);

        let started = Instant::now();
        let (energy, success) = collect::energy(snap, config);
        families.extend(energy);
        families.extend(carbon::families(snap));
        outcomes.push(collect::Outcome {
            name: "energy",
            success,
            seconds: self.elapsed(started),
        });

        let started = Instant::now();
        let view = self.ledger.update(snap);
        let context = config
            .containers
            .as_ref()
            .map(|c| labels::ContainerContext {
                node_name: c.node_name.as_deref().filter(|n| !n.is_empty()),
            });
        let (processes, success) = collect::processes(snap, &view, config, context.as_ref());
        families.extend(processes);
        outcomes.push(collect::Outcome {
            name: "processes",
            success,
            seconds: self.elapsed(started),
        });

        if config.containers.is_some() {
            let started = Instant::now();
            let totals = snap.containers.as_ref();
            if let Some(totals) = totals {
                families.extend(containers::families(totals, snap.host.is_some()));
                if snap.host.is_some() && snap.carbon_intensity.is_some() {
                    families.push(containers::co2_family(totals));
                }
            }
            // Resolving happened in the agent's cycle: its time counts here.
            let resolving = if self.timed {
                totals.map_or(0.0, |t| t.seconds)
            } else {
                0.0
            };
            outcomes.push(collect::Outcome {
                name: "containers",
                success: totals.is_some_and(|t| t.healthy) && snap.cputime_ok,
                seconds: resolving + self.elapsed(started),
            });
        }

        if config.compat {
            let started = Instant::now();
            let (host, success) = compat::host(snap);
            families.extend(host);
            outcomes.push(collect::Outcome {
                name: "host",
                success,
                seconds: self.elapsed(started),
            });
        }

        let started = Instant::now();
        let (own, success) = collect::self_stats(snap, config);
        families.extend(own);
        outcomes.push(collect::Outcome {
            name: "self",
            success,
            seconds: self.elapsed(started),
        });

        families.extend(collect::collector_families(&outcomes));
        self.guard_counters(&mut families);
        self.energy_regressions = self.energy_regressions.max(snap.energy_regressions);
        families.push(self.regressions_family());
        families
    }

    fn elapsed(&self, started: Instant) -> f64 {
        if self.timed {
            started.elapsed().as_secs_f64()
        } else {
            0.0
        }
    }

    /// Collector names, in output order.
    fn collectors(&self) -> Vec<&'static str> {
        let mut names = vec!["energy", "processes"];
        if self.config.containers.is_some() {
            names.push("containers");
        }
        if self.config.compat {
            names.push("host");
        }
        names.push("self");
        names
    }

    /// No exposed counter ever goes backwards, whatever happens upstream
    /// (a bug): a lower value repeats the previous one. A series counts and
    /// is logged (see [`regressions`]) when it starts being held, not again
    /// while it stays held.
    fn guard_counters(&mut self, families: &mut [Family]) {
        let mut seen = HashMap::with_capacity(self.counters.len());
        for family in families
            .iter_mut()
            .filter(|f| f.def.kind == names::Kind::Counter)
        {
            for sample in &mut family.samples {
                let id = series_id(family.def.name, &sample.labels, sample.owner);
                let mut held = false;
                if let Some(&(before, was_held)) = self.counters.get(&id) {
                    if sample.value < before || sample.value.is_nan() {
                        if !was_held {
                            let labels = &sample.labels;
                            self.regressions.note(
                                family.def.name,
                                || {
                                    let mut key = String::from(family.def.name);
                                    text::write_labels(&mut key, labels);
                                    key
                                },
                                before,
                                sample.value,
                            );
                        }
                        sample.value = before;
                        held = true;
                    }
                }
                seen.insert(id, (sample.value, held));
            }
        }
        self.counters = seen;
    }
}

/// A series' identity, `name{labels}` and its owner (see
/// [`Sample::owner`]), as a 128-bit hash: two independent SipHash values, so
/// a collision among even millions of series is out of reach, at a tenth of
/// the memory of keeping the text (one series per process per counter can
/// mean tens of thousands).
fn series_id(name: &str, labels: &[(&'static str, String)], owner: u64) -> u128 {
    let half = |salt: u8| {
        let mut hasher = std::hash::DefaultHasher::new();
        (salt, name, labels, owner).hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporters::golden_fixture;

    fn value(families: &[Family], name: &str) -> Option<f64> {
        families
            .iter()
            .find(|f| f.def.name == name)
            .and_then(|f| f.samples.first())
            .map(|s| s.value)
    }

    fn success(families: &[Family], collector: &str) -> Option<f64> {
        families
            .iter()
            .find(|f| f.def.name == names::COLLECTOR_SUCCESS.name)?
            .samples
            .iter()
            .find(|s| s.labels.iter().any(|(_, v)| v == collector))
            .map(|s| s.value)
    }

    #[test]
    fn a_counter_that_would_go_backwards_repeats_its_last_value() {
        let mut state = MetricsState::new(MetricsConfig::default()).untimed();
        let mut snap = golden_fixture();
        state.update(&snap);
        if let Some(host) = snap.host.as_mut() {
            host.joules_total -= 1.0; // e.g. a bug or float noise upstream
        }
        let families = state.update(&snap);
        assert_eq!(
            value(&families, "scaph_host_energy_joules_total"),
            Some(100.0)
        );
        assert_eq!(
            value(&families, "scaph_monotonicity_violations_total"),
            Some(1.0)
        );
        assert_eq!(
            state.regressions.lines,
            [
                "counter regression: scaph_host_energy_joules_total went from 100 to 99; kept 100 \
              (counted in scaph_monotonicity_violations_total; a bug to report)"
            ]
        );
    }

    /// A table: what goes wrong upstream, how many regressions the
    /// exposition must then report, and how many lines the guard logs (the
    /// ledger logs its own; the agent logs the accumulator's).
    #[test]
    fn every_held_counter_is_counted_wherever_it_was_held() {
        type Break = fn(&mut Snapshot);
        let cases: [(&str, Break, f64, usize); 6] = [
            ("an unchanged snapshot again", |_| {}, 0.0, 0),
            (
                "host and idle energy lower",
                |s| {
                    for e in [s.host.as_mut(), s.idle.as_mut()].into_iter().flatten() {
                        e.joules_total -= 1.0;
                    }
                },
                2.0,
                2,
            ),
            (
                "a process's energy lower (held by the ledger)",
                |s| {
                    if let Some(e) = s.processes[0].energy.as_mut() {
                        e.joules_total -= 1.0;
                    }
                },
                1.0,
                0,
            ),
            (
                "a process's CPU time NaN (held by the ledger)",
                |s| s.processes[0].cpu_seconds_total = f64::NAN,
                1.0,
                0,
            ),
            (
                "retired energy lower (others held by the ledger)",
                |s| s.retired_joules -= 1.0,
                1.0,
                0,
            ),
            (
                "three energy deltas refused by the accumulator",
                |s| s.energy_regressions += 3,
                3.0,
                0,
            ),
        ];
        for (what, break_it, want, lines) in cases {
            let mut state = MetricsState::new(MetricsConfig::default()).untimed();
            let mut snap = golden_fixture();
            let first = state.update(&snap);
            assert_eq!(
                value(&first, "scaph_monotonicity_violations_total"),
                Some(0.0)
            );
            break_it(&mut snap);
            let families = state.update(&snap);
            assert_eq!(
                value(&families, "scaph_monotonicity_violations_total"),
                Some(want),
                "{what}"
            );
            assert_eq!(state.regressions.lines.len(), lines, "{what}");
            let text = encode(&families);
            assert!(
                text.contains("\nscaph_host_energy_joules_total 100\n"),
                "{what}"
            );
        }
    }

    /// pid_max is 32768 by default: a pid comes back, often with the same
    /// comm and exe, while the old process is still listed for --retention.
    /// The new one's series starts afresh (a reset to Prometheus), and is
    /// neither held at the old value nor counted.
    #[test]
    fn a_reused_pid_is_a_new_series_not_a_violation() {
        let mut state = MetricsState::new(MetricsConfig::default()).untimed();
        let mut snap = golden_fixture();
        state.update(&snap);
        let old = snap
            .processes
            .iter()
            .find(|p| p.exited)
            .cloned()
            .expect("the fixture has an exited process");
        let mut new = old.clone();
        new.key.start_ns += 1_000_000_000;
        new.exited = false;
        new.cpu_seconds_total = 0.25;
        new.cpu_ratio = 0.5;
        new.energy = Some(crate::snapshot::Energy {
            joules_total: 1.0,
            watts: 1000.0, // outranks the old one at once
        });
        snap.processes.push(new);
        let text = encode(&state.update(&snap));
        let series = format!(
            "scaph_process_energy_joules_total{{pid=\"{}\",comm=\"cc1\",exe=\"/usr/lib/gcc/x86_64-linux-gnu/12/cc1\"}}",
            old.key.pid
        );
        assert!(text.contains(&format!("\n{series} 1\n")), "{text}");
        assert!(
            text.contains("\nscaph_monotonicity_violations_total 0\n"),
            "{text}"
        );
        assert!(state.regressions.lines.is_empty());
    }

    /// A series held over several updates counts once, when the hold
    /// starts; once it has caught up, a new hold counts again.
    #[test]
    fn a_held_series_counts_once_per_hold() {
        let mut state = MetricsState::new(MetricsConfig::default()).untimed();
        let snap = golden_fixture();
        let violations = |state: &mut MetricsState, snap: &Snapshot, host: f64| {
            let mut snap = snap.clone();
            if let Some(h) = snap.host.as_mut() {
                h.joules_total = host;
            }
            value(&state.update(&snap), names::MONOTONICITY_VIOLATIONS.name)
        };
        let hosts = [100.0, 90.0, 95.0, 99.0, 101.0, 100.5, 102.0];
        let want = [0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0];
        for (host, want) in hosts.into_iter().zip(want) {
            assert_eq!(
                violations(&mut state, &snap, host),
                Some(want),
                "host at {host}"
            );
        }
        assert_eq!(state.regressions.lines.len(), 2);
    }

    #[test]
    fn a_failing_collector_is_marked_and_the_rest_still_answers() {
        let mut state = MetricsState::new(MetricsConfig {
            compat: true,
            ..MetricsConfig::default()
        })
        .untimed();
        let mut snap = golden_fixture();
        snap.energy_ok = false;
        snap.host_stats = None;
        let families = state.update(&snap);
        assert_eq!(success(&families, "energy"), Some(0.0));
        assert_eq!(success(&families, "host"), Some(0.0));
        assert_eq!(success(&families, "processes"), Some(1.0));
        assert_eq!(
            value(&families, "scaph_host_energy_joules_total"),
            Some(100.0),
            "last known counters are still exposed"
        );
        assert!(value(&families, "scaph_host_load_avg_one").is_none());
    }

    #[test]
    fn before_the_first_measurement_only_build_info_and_unsuccessful_collectors() {
        let text = encode(&MetricsState::new(MetricsConfig::default()).before_first_measurement());
        assert!(text.contains("scaph_build_info{version="));
        assert!(text.contains("scaph_scrape_collector_success{collector=\"energy\"} 0"));
        assert!(!text.contains("scaph_host_energy"));
        assert!(
            text.contains("\nscaph_monotonicity_violations_total 0\n"),
            "a counter from the start, so that increase() sees the first one"
        );
    }

    /// --containers: process series carry their container's labels, and
    /// Σ container series + idle = host, but for the fixture's 5 J retired
    /// before the tracker started (in a real agent it starts with the agent).
    #[test]
    fn containers_label_processes_and_add_up_to_the_host() {
        use crate::containers::ContainersConfig;
        let id = "4f1d5e2a3b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";
        let mut snap = golden_fixture();
        snap.processes[0].meta_mut().cgroup_path =
            Some(format!("/system.slice/docker-{id}.scope").into());
        let config = MetricsConfig {
            containers: Some(ContainerLabels::default()),
            compat: true,
            ..MetricsConfig::default()
        };
        let mut tracker =
            crate::containers::aggregate::FromTotals::new(crate::containers::Tracker::with_pods(
                &ContainersConfig {
                    cgroup_root: "/nonexistent".into(),
                    ..ContainersConfig::default()
                },
                crate::containers::PodDirectory::default(),
            ));
        tracker.update(&mut snap);
        let mut state = MetricsState::new(config).untimed();
        let text = encode(&state.update(&snap));
        let value = |line: &str| {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .expect("value")
        };
        let sum = |prefix: &str| {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .map(value)
                .sum::<f64>()
        };
        let containers = sum("scaph_container_energy_joules_total{");
        assert!(
            (containers + sum("scaph_idle_energy_joules_total ") + 5.0 - 100.0).abs() < 1e-9,
            "{text}"
        );
        let labels = format!(
            "container_id=\"{id}\",container_runtime=\"docker\",systemd_unit=\"docker-{id}.scope\""
        );
        assert!(text.contains(&format!("scaph_process_energy_joules_total{{pid=\"4242\",comm=\"postgres\",exe=\"/usr/lib/postgresql/15/bin/postgres\",{labels}}} 40")), "{text}");
        assert!(text.contains(&format!(
            "scaph_container_energy_joules_total{{container_id=\"{id}\",container_runtime=\"docker\"}} 40"
        )));
        assert!(text.contains("scaph_container_energy_joules_total{container_id=\"[others]\"} 0"));
        assert!(
            text.contains(&format!(
                "container_scheduler=\"docker\",container_runtime=\"docker\",container_id=\"{id}\""
            )),
            "compat labels"
        );
        assert!(
            !text.contains("systemd_unit=\"postgresql.service\""),
            "the docker scope replaced it"
        );
        assert!(text.contains("scaph_scrape_collector_success{collector=\"containers\"} 1"));
    }

    #[test]
    fn without_an_energy_source_there_are_no_energy_families() {
        let mut snap = golden_fixture();
        snap.sensor = None;
        snap.host = None;
        snap.idle = None;
        snap.sockets.clear();
        for p in &mut snap.processes {
            p.energy = None;
        }
        let text = encode(
            &MetricsState::new(MetricsConfig::default())
                .untimed()
                .update(&snap),
        );
        assert!(!text.contains("joules"), "{text}");
        assert!(text.contains("scaph_process_cpu_seconds_total{pid=\"4242\""));
        assert!(text.contains("scaph_scrape_collector_success{collector=\"energy\"} 0"));
    }
}
