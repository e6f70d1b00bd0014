//! Carbon counters of the host, its sockets and idle energy
//! (`scaph_*_co2_grams_total`), formatted from the snapshot's grams. The
//! agent counts every gram once per cycle: each counter's joules of the
//! cycle at the intensity in force during it (see
//! [`crate::attribution::Cumulative::grams`]); processes and containers get
//! theirs from the same amounts, so Σ processes + idle = host and
//! Σ containers + idle = host hold for grams as for joules, whichever
//! snapshots an exporter sees.
//!
//! Without an intensity (no carbon option, or no valid value yet) no carbon
//! family is shown; grams start from the first cycle that has one.
use super::{names, Family};
use crate::snapshot::Snapshot;

/// The carbon families to show for `snap`.
#[must_use]
pub fn families(snap: &Snapshot) -> Vec<Family> {
    let Some(intensity) = snap.carbon_intensity else {
        return Vec::new();
    };
    let intensity_family = Family::single(&names::CARBON_INTENSITY, intensity);
    let (Some(co2), true) = (&snap.co2, snap.host.is_some() && snap.idle.is_some()) else {
        return vec![intensity_family];
    };
    let mut sockets = Family::new(&names::SOCKET_CO2);
    for (id, grams) in &co2.sockets {
        sockets.push(vec![("socket_id", id.to_string())], *grams);
    }
    vec![
        intensity_family,
        Family::single(&names::HOST_CO2, co2.host),
        sockets,
        Family::single(&names::IDLE_CO2, co2.idle),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        exporters::golden_fixture,
        snapshot::{Co2Totals, Energy},
    };

    fn grams(families: &[Family], name: &str) -> f64 {
        families
            .iter()
            .find(|f| f.def.name == name)
            .and_then(|f| f.samples.first())
            .map_or(f64::NAN, |s| s.value)
    }

    /// The snapshot's grams, shown only with an intensity; with an
    /// intensity but no energy, only the intensity.
    #[test]
    fn the_snapshots_grams_are_shown_with_an_intensity() {
        let mut snap = golden_fixture();
        snap.co2 = Some(Co2Totals {
            host: 0.5,
            idle: 0.125,
            sockets: vec![(0, 0.25), (1, 0.25)],
            retired: 0.01,
        });
        assert!(families(&snap).is_empty(), "no intensity, no family");
        snap.carbon_intensity = Some(412.0);
        let shown = families(&snap);
        assert_eq!(grams(&shown, names::CARBON_INTENSITY.name), 412.0);
        assert_eq!(grams(&shown, names::HOST_CO2.name), 0.5);
        assert_eq!(grams(&shown, names::IDLE_CO2.name), 0.125);
        let sockets = shown
            .iter()
            .find(|f| f.def.name == names::SOCKET_CO2.name)
            .expect("sockets");
        assert_eq!(sockets.samples.len(), 2);
        snap.host = None;
        assert_eq!(families(&snap).len(), 1, "only the intensity");
    }

    /// The golden host over six steps, every joule scaled by the step, with
    /// one listed process (`--max-processes 1`): the top process changes at
    /// step 3 (the old one is folded into pid=""), and the exited one is
    /// retired at step 4. With the grams an agent counts at one intensity,
    /// every process series, `pid=""` and the containers too, holds its
    /// joules × intensity / 3.6e6 through the ledger's bookkeeping, and
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
            // The grams the agent would have counted at one intensity.
            let co2 = |e: Option<Energy>| e.map_or(0.0, |e| e.joules_total * INTENSITY / 3.6e6);
            for p in &mut snap.processes {
                p.co2_grams_total = co2(p.energy);
            }
            snap.co2 = Some(Co2Totals {
                host: co2(snap.host),
                idle: co2(snap.idle),
                sockets: snap
                    .sockets
                    .iter()
                    .map(|s| (s.id, co2(Some(s.energy))))
                    .collect(),
                retired: snap.retired_joules * INTENSITY / 3.6e6,
            });
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
