//! Energy estimated from CPU utilisation, for machines without RAPL (most
//! cloud VMs, old or ARM CPUs).
//!
//! A linear model per socket: `P = idle + (max - idle) × busy`, where `busy`
//! is the mean busy fraction of the socket's CPUs over the interval, and
//! `E = P × interval`. Linear power-vs-utilisation models are crude (real
//! curves bend, and frequency scaling matters) but they are what the usual
//! estimators (Cloud Carbon Footprint, Kepler's fallback without models) do,
//! and they keep attribution honest about *shares*. Every value this sensor
//! produces carries [`EnergyOrigin::Estimated`]: it is not a measurement.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::{
    topology::Topology, DomainKind, EnergyOrigin, EnergyReading, EnergySensor, SensorError,
    Utilisation, ZoneEnergy,
};

/// Default power of one socket with all its CPUs idle (see [`LinearModel::default`]).
pub const DEFAULT_IDLE_WATTS: f64 = 10.0;
/// Default power of one socket with all its CPUs busy (see [`LinearModel::default`]).
pub const DEFAULT_MAX_WATTS: f64 = 35.0;

/// Power of one socket at 0 % and 100 % busy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearModel {
    pub idle_watts: f64,
    pub max_watts: f64,
}

impl Default for LinearModel {
    /// 10 W idle, 35 W fully busy, per socket.
    ///
    /// Why: the machines that need this sensor are mostly small cloud VMs,
    /// whose one virtual socket is a few vCPUs of a large server. Published
    /// per-vCPU coefficients (e.g. Cloud Carbon Footprint's, roughly 0.7 W
    /// idle and 3.5 W busy per vCPU) give about 3 to 30 W for 4 to 8 vCPUs;
    /// a low-power physical CPU (35 W TDP class) idles near 10 W. 10 → 35 W
    /// is within a factor of about 2 of both, which is as good as a default
    /// can be: set real figures for the hardware when they are known.
    fn default() -> Self {
        Self {
            idle_watts: DEFAULT_IDLE_WATTS,
            max_watts: DEFAULT_MAX_WATTS,
        }
    }
}

impl LinearModel {
    /// A model, or `None` unless `0 <= idle_watts <= max_watts` and both are finite.
    #[must_use]
    pub fn new(idle_watts: f64, max_watts: f64) -> Option<Self> {
        (idle_watts.is_finite()
            && max_watts.is_finite()
            && idle_watts >= 0.0
            && idle_watts <= max_watts)
            .then_some(Self {
                idle_watts,
                max_watts,
            })
    }

    /// Power at `busy` (clamped to 0..=1; NaN counts as idle). Never negative,
    /// even if the public fields were set to nonsense.
    #[must_use]
    pub fn watts(&self, busy: f64) -> f64 {
        let busy = if busy.is_nan() {
            0.0
        } else {
            busy.clamp(0.0, 1.0)
        };
        let idle = finite_non_negative(self.idle_watts);
        let max = finite_non_negative(self.max_watts).max(idle);
        idle + (max - idle) * busy
    }
}

fn finite_non_negative(x: f64) -> f64 {
    if x.is_finite() {
        x.max(0.0)
    } else {
        0.0
    }
}

/// Estimated package energy per socket.
#[derive(Debug)]
pub struct EstimateSensor {
    topology: Topology,
    default_model: LinearModel,
    models: BTreeMap<u32, LinearModel>,
    last_poll: Option<Instant>,
}

impl EstimateSensor {
    /// Same `model` for every socket of `topology`.
    #[must_use]
    pub fn new(topology: Topology, model: LinearModel) -> Self {
        Self {
            topology,
            default_model: model,
            models: BTreeMap::new(),
            last_poll: None,
        }
    }

    /// Uses `model` for `socket` instead of the default one.
    pub fn set_model(&mut self, socket: u32, model: LinearModel) {
        self.models.insert(socket, model);
    }

    /// Energy of each socket for a known `interval` and utilisation (pure).
    #[must_use]
    pub fn estimate(&self, utilisation: &Utilisation, interval: Duration) -> Vec<ZoneEnergy> {
        let secs = interval.as_secs_f64();
        self.topology
            .sockets()
            .iter()
            .map(|&socket| {
                let model = self.models.get(&socket).unwrap_or(&self.default_model);
                let busy = mean_busy(utilisation, self.topology.cpus_of(socket));
                ZoneEnergy {
                    socket: Some(socket),
                    kind: DomainKind::Package,
                    name: format!("package-{socket}"),
                    path: None,
                    joules: model.watts(busy) * secs,
                }
            })
            .collect()
    }

    /// [`EnergySensor::poll`] at a given instant (tests inject the clock).
    pub fn poll_at(&mut self, utilisation: &Utilisation, now: Instant) -> EnergyReading {
        let Some(previous) = self.last_poll.replace(now) else {
            return EnergyReading::default();
        };
        let interval = now.saturating_duration_since(previous);
        EnergyReading {
            interval,
            zones: self.estimate(utilisation, interval),
            implausible_dropped: 0,
        }
    }
}

/// Mean busy fraction of `cpus`. CPUs the utilisation does not cover are
/// left out of the mean; with none covered, the socket counts as idle.
fn mean_busy(utilisation: &Utilisation, cpus: &[u32]) -> f64 {
    let (sum, n) = cpus
        .iter()
        .filter_map(|&cpu| utilisation.busy.get(cpu as usize))
        .map(|&b| if b.is_nan() { 0.0 } else { b.clamp(0.0, 1.0) })
        .fold((0.0, 0_u32), |(s, n), b| (s + b, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / f64::from(n)
    }
}

impl EnergySensor for EstimateSensor {
    fn name(&self) -> &'static str {
        "estimate"
    }

    fn origin(&self) -> EnergyOrigin {
        EnergyOrigin::Estimated
    }

    fn poll(&mut self, utilisation: &Utilisation) -> Result<EnergyReading, SensorError> {
        Ok(self.poll_at(utilisation, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::host_joules;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn two_sockets() -> Topology {
        Topology::from_map(vec![(0, 0), (1, 0), (2, 1), (3, 1)])
    }

    #[test]
    fn first_poll_is_a_baseline() {
        let mut s = EstimateSensor::new(two_sockets(), LinearModel::default());
        let r = s.poll_at(&Utilisation { busy: vec![1.0; 4] }, Instant::now());
        assert_eq!(r, EnergyReading::default());
    }

    #[test]
    fn linear_per_socket_over_the_interval() {
        let mut s = EstimateSensor::new(two_sockets(), LinearModel::new(10.0, 30.0).unwrap());
        let t0 = Instant::now();
        s.poll_at(&Utilisation::default(), t0);
        // Socket 0: CPUs 100 % and 0 % → mean 0.5 → 20 W; socket 1 idle → 10 W.
        let util = Utilisation {
            busy: vec![1.0, 0.0, 0.0, 0.0],
        };
        let r = s.poll_at(&util, t0 + Duration::from_secs(2));
        assert_eq!(r.interval, Duration::from_secs(2));
        assert_eq!(r.zones.len(), 2);
        assert_eq!(r.zones[0].name, "package-0");
        assert_eq!(r.zones[0].kind, DomainKind::Package);
        assert!(close(r.zones[0].joules, 40.0));
        assert!(close(r.zones[1].joules, 20.0));
        assert!(close(host_joules(&r.zones), 60.0));
    }

    #[test]
    fn per_socket_models_and_bad_input() {
        let mut s = EstimateSensor::new(two_sockets(), LinearModel::default());
        s.set_model(1, LinearModel::new(0.0, 100.0).unwrap());
        // Out-of-range and NaN fractions are clamped; CPU 3 is not covered.
        let util = Utilisation {
            busy: vec![2.0, f64::NAN, -1.0],
        };
        let zones = s.estimate(&util, Duration::from_secs(1));
        assert!(close(zones[0].joules, 10.0 + 25.0 * 0.5));
        assert!(close(zones[1].joules, 0.0));
    }

    #[test]
    fn invalid_models_are_refused_and_never_negative() {
        assert!(LinearModel::new(-1.0, 10.0).is_none());
        assert!(LinearModel::new(20.0, 10.0).is_none());
        assert!(LinearModel::new(f64::NAN, 10.0).is_none());
        let silly = LinearModel {
            idle_watts: -5.0,
            max_watts: f64::INFINITY,
        };
        assert!(silly.watts(1.0) >= 0.0);
    }

    #[test]
    fn default_model_and_labels() {
        let s = EstimateSensor::new(Topology::from_map(vec![(0, 0)]), LinearModel::default());
        assert_eq!(s.name(), "estimate");
        assert_eq!(s.origin(), EnergyOrigin::Estimated);
        let zones = s.estimate(&Utilisation { busy: vec![1.0] }, Duration::from_secs(1));
        assert!(close(zones[0].joules, 35.0));
    }
}
