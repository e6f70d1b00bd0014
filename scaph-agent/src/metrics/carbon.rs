//! Carbon counters of the host, its sockets and idle energy
//! (`scaph_*_co2_grams_total`). Each update adds the joules each counter
//! grew by since the previous snapshot these metrics saw, times the
//! intensity in force in the newer snapshot, divided by 3.6e6 (see
//! [`crate::amounts::grams`]). Processes get theirs the same way, in the
//! ledger ([`crate::amounts::Amounts::advance`]), so Σ processes + idle =
//! host holds for grams as for joules.
//!
//! Containers differ: the agent's tracker adds each cycle's joules at that
//! cycle's intensity. The two agree while the metrics see every snapshot,
//! or while the intensity stays the same; when an exporter skips snapshots
//! (the channel keeps only the latest) across a change of intensity, the
//! skipped joules are counted at the newer intensity here and at their own
//! in the containers, so Σ container grams + idle grams can differ from
//! the host's grams by those joules times the change. Joules are exact
//! either way. Counting every gram once per cycle on the measurement side,
//! carried in the snapshot, would remove the gap.
//!
//! Without an intensity (no carbon option, or no valid value yet) joules
//! are still followed, so that grams start from the first step that has
//! one, and no carbon family is shown.
use std::collections::BTreeMap;

use super::{names, Family};
use crate::snapshot::{Amounts, Energy, Snapshot};

/// Grams of each host-level counter, by the joules it follows.
#[derive(Debug, Default)]
pub struct Totals {
    host: Amounts,
    idle: Amounts,
    sockets: BTreeMap<u32, Amounts>,
}

fn advance(last: &mut Amounts, energy: Energy, intensity: Option<f64>) {
    let now = Amounts {
        joules: if energy.joules_total.is_finite() {
            energy.joules_total
        } else {
            last.joules // not a number: no growth this time
        },
        ..Amounts::default()
    };
    let _ = Amounts::advance(last, now, intensity);
}

impl Totals {
    /// Folds one snapshot in and returns the carbon families to show.
    pub fn update(&mut self, snap: &Snapshot) -> Vec<Family> {
        let intensity = snap.carbon_intensity;
        let (Some(host), Some(idle)) = (snap.host, snap.idle) else {
            return intensity.map_or_else(Vec::new, |i| {
                vec![Family::single(&names::CARBON_INTENSITY, i)]
            });
        };
        advance(&mut self.host, host, intensity);
        advance(&mut self.idle, idle, intensity);
        for socket in &snap.sockets {
            advance(
                self.sockets.entry(socket.id).or_default(),
                socket.energy,
                intensity,
            );
        }
        let Some(intensity) = intensity else {
            return Vec::new();
        };
        let mut sockets = Family::new(&names::SOCKET_CO2);
        for (id, amounts) in &self.sockets {
            sockets.push(vec![("socket_id", id.to_string())], amounts.grams);
        }
        vec![
            Family::single(&names::CARBON_INTENSITY, intensity),
            Family::single(&names::HOST_CO2, self.host.grams),
            sockets,
            Family::single(&names::IDLE_CO2, self.idle.grams),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporters::golden_fixture;

    fn grams(families: &[Family], name: &str) -> f64 {
        families
            .iter()
            .find(|f| f.def.name == name)
            .and_then(|f| f.samples.first())
            .map_or(f64::NAN, |s| s.value)
    }

    /// Host joules at each step, the intensity in force during it, and the
    /// host grams then: a new intensity applies only to joules after it.
    #[test]
    fn each_step_counts_at_the_intensity_in_force() {
        let steps: [(f64, Option<f64>, f64); 6] = [
            (100.0, Some(360.0), 0.01),          // the first 100 J at 360 g/kWh
            (460.0, Some(360.0), 0.01 + 0.036),  // +360 J
            (820.0, Some(36.0), 0.046 + 0.0036), // +360 J at a tenth
            (820.0, Some(5000.0), 0.0496),       // no joules, no grams
            (1180.0, None, 0.0496),              // no intensity: not counted
            (1540.0, Some(0.0), 0.0496),         // a zero-carbon step
        ];
        let mut totals = Totals::default();
        let mut snap = golden_fixture();
        for (joules, intensity, want) in steps {
            snap.host = Some(Energy {
                joules_total: joules,
                watts: 0.0,
            });
            snap.carbon_intensity = intensity;
            let families = totals.update(&snap);
            if intensity.is_some() {
                let got = grams(&families, names::HOST_CO2.name);
                assert!(
                    (got - want).abs() < 1e-12,
                    "{joules} J: {got} g, want {want}"
                );
            } else {
                assert!(
                    families.is_empty(),
                    "no carbon families without an intensity"
                );
            }
        }
    }

    /// With one intensity throughout, grams are joules × intensity / 3.6e6.
    #[test]
    fn a_fixed_intensity_gives_joules_times_intensity() {
        let mut totals = Totals::default();
        let mut snap = golden_fixture();
        snap.carbon_intensity = Some(412.0);
        let mut families = Vec::new();
        for step in 1..=1000 {
            let scale = f64::from(step);
            snap.host = Some(Energy {
                joules_total: 100.0 * scale + 0.1 * scale * scale,
                watts: 0.0,
            });
            families = totals.update(&snap);
        }
        let joules = snap.host.map_or(0.0, |h| h.joules_total);
        let want = joules * 412.0 / 3.6e6;
        let got = grams(&families, names::HOST_CO2.name);
        assert!(((got - want) / want).abs() < 1e-12, "{got} vs {want}");
        let idle = snap.idle.map_or(0.0, |i| i.joules_total) * 412.0 / 3.6e6;
        assert!((grams(&families, names::IDLE_CO2.name) - idle).abs() < 1e-12);
    }

    /// The golden host over six steps, every joule scaled by the step, with
    /// one listed process (`--max-processes 1`): the top process changes at
    /// step 3 (the old one is folded into pid=""), and the exited one is
    /// retired at step 4. At one intensity every process series, `pid=""`
    /// and the containers too, holds its joules × intensity / 3.6e6, and
    /// Σ processes + idle = host in grams as in joules (the containers' sum
    /// is checked where they are counted: this fixture retires energy the
    /// tracker was never fed).
    #[test]
    fn processes_and_idle_add_up_to_the_host_in_grams() {
        use crate::{
            containers::ContainersConfig,
            metrics::{MetricsConfig, MetricsState},
        };
        const INTENSITY: f64 = 300.0;
        let config = MetricsConfig {
            max_processes: 1,
            containers: Some(crate::metrics::ContainerLabels::default()),
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
        let mut state = MetricsState::new(config).untimed();
        let base = golden_fixture();
        let mut retired_pid = None;
        for step in 1..=6 {
            let k = f64::from(step);
            let mut snap = base.clone();
            snap.carbon_intensity = Some(INTENSITY);
            let scale = |e: &mut Option<Energy>| {
                if let Some(e) = e.as_mut() {
                    e.joules_total *= k;
                }
            };
            scale(&mut snap.host);
            scale(&mut snap.idle);
            snap.retired_joules *= k;
            for socket in &mut snap.sockets {
                socket.energy.joules_total *= k;
            }
            for p in &mut snap.processes {
                scale(&mut p.energy);
                if let Some(e) = p.energy.as_mut().filter(|_| step >= 3 && p.key.pid == 5000) {
                    e.watts = 1e6; // now the top one
                }
            }
            if step >= 4 {
                let i = snap.processes.iter().position(|p| p.exited).unwrap();
                let gone = snap.processes.remove(i);
                snap.retired_joules += gone.energy.map_or(0.0, |e| e.joules_total);
                retired_pid = Some(gone.key.pid);
            }
            tracker.update(&mut snap);
            let families = state.update(&snap);
            let family = |def: &names::Def| {
                families
                    .iter()
                    .find(|f| f.def.name == def.name)
                    .unwrap_or_else(|| panic!("no {}", def.name))
            };
            let sum = |def: &names::Def| family(def).samples.iter().map(|s| s.value).sum::<f64>();
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()));
            for (joules_def, co2_def) in [
                (&names::PROCESS_ENERGY, &names::PROCESS_CO2),
                (&names::CONTAINER_ENERGY, &names::CONTAINER_CO2),
                (&names::HOST_ENERGY, &names::HOST_CO2),
                (&names::IDLE_ENERGY, &names::IDLE_CO2),
                (&names::SOCKET_ENERGY, &names::SOCKET_CO2),
            ] {
                let joules = family(joules_def);
                let co2 = family(co2_def);
                assert_eq!(joules.samples.len(), co2.samples.len(), "{}", co2_def.name);
                for (j, g) in joules.samples.iter().zip(&co2.samples) {
                    assert_eq!(j.labels, g.labels);
                    assert!(
                        close(g.value, j.value * INTENSITY / 3.6e6),
                        "step {step} {}{:?}: {} g for {} J",
                        co2_def.name,
                        g.labels,
                        g.value,
                        j.value
                    );
                }
            }
            let host = sum(&names::HOST_CO2);
            let parts = sum(&names::PROCESS_CO2) + sum(&names::IDLE_CO2);
            assert!(close(parts, host), "step {step}: {parts} != {host}");
            let listed = &family(&names::PROCESS_CO2).samples;
            let want_listed = if step >= 3 { "5000" } else { "4242" };
            assert_eq!(listed[0].labels[0].1, want_listed, "step {step}");
            assert_eq!(listed.len(), 2, "one listed, and pid=\"\"");
        }
        assert_eq!(retired_pid, Some(31337));
    }
}
