//! Turning one cumulative energy counter into plausible per-interval deltas.
//!
//! Kept apart from file reading so that wrap and sanity rules are tested on
//! numbers alone. Every counter is handled on its own, *before* anything is
//! summed: a sum of wrapping counters can hide a wrap (Scaphandre's host
//! value does), a single counter cannot.
use std::time::Duration;

/// No zone draws more than this: a larger average over an interval means a
/// counter reset, a bad read, or a confused hypervisor, not real energy.
/// 10 kW is far above any CPU package, DRAM or platform (psys) zone.
pub const MAX_PLAUSIBLE_WATTS: f64 = 10_000.0;

/// What one new reading of a counter means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterUpdate {
    /// First reading (or first after a reset): nothing to report yet.
    Baseline,
    /// Energy since the previous reading, µJ (wrap already undone).
    Delta(u64),
    /// The reading cannot be right; the delta is dropped and the new value
    /// becomes the baseline (or, for a value beyond the range, none is kept).
    Implausible(Implausible),
}

/// Logs the `dropped`-th implausible reading of the counter at `path`. A
/// stuck counter would warn every poll: the 1st, 2nd, 4th, 8th... drop
/// warns, the rest go to debug level. One policy for every energy sensor.
pub fn log_dropped(path: &std::path::Path, why: &dyn std::fmt::Display, dropped: u64) {
    let level = if dropped.is_power_of_two() {
        log::Level::Warn
    } else {
        log::Level::Debug
    };
    log::log!(
        level,
        "{}: dropped an implausible reading ({why}); {dropped} dropped so far",
        path.display()
    );
}

/// Why a delta was dropped (for the log message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implausible {
    /// The value exceeds `max_energy_range_uj`.
    OutOfRange { value: u64, max_range: u64 },
    /// The delta averages more than [`MAX_PLAUSIBLE_WATTS`] over the interval.
    TooMuchPower { delta_uj: u64, interval: Duration },
}

/// One cumulative µJ counter that wraps at `max_range` (powercap's
/// `max_energy_range_uj`).
#[derive(Clone, Debug)]
pub struct EnergyCounter {
    max_range: u64,
    last: Option<u64>,
}

impl EnergyCounter {
    #[must_use]
    pub const fn new(max_range: u64) -> Self {
        Self {
            max_range,
            last: None,
        }
    }

    /// Forgets the previous reading: the next one is a baseline. Called after
    /// a failed read, so a gap never turns into a spike.
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// Takes a new reading, `interval` after the previous one.
    ///
    /// Wrap: when `value < previous`, the counter went past `max_range` and
    /// restarted at 0, so `delta = (max_range - previous) + value`. This reads
    /// `max_energy_range_uj` as the counter's period, as the powercap ABI
    /// documents it ("range of the above energy counter"). The hardware
    /// counter really restarts one raw unit (15.3 to 61 µJ on RAPL) after the
    /// maximum it can show; sysfs does not expose that unit, so each wrap
    /// may undercount by that much (about 1e-10 of the energy between wraps).
    pub fn update(&mut self, value: u64, interval: Duration) -> CounterUpdate {
        if value > self.max_range {
            self.last = None;
            return CounterUpdate::Implausible(Implausible::OutOfRange {
                value,
                max_range: self.max_range,
            });
        }
        let Some(previous) = self.last.replace(value) else {
            return CounterUpdate::Baseline;
        };
        let delta_uj = if value >= previous {
            value - previous
        } else {
            // previous <= max_range (checked when it was taken), so no underflow;
            // the sum is < max_range because value < previous.
            (self.max_range - previous) + value
        };
        if delta_uj as f64 > MAX_PLAUSIBLE_WATTS * interval.as_secs_f64() * 1e6 {
            return CounterUpdate::Implausible(Implausible::TooMuchPower { delta_uj, interval });
        }
        CounterUpdate::Delta(delta_uj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn baseline_then_delta() {
        let mut c = EnergyCounter::new(1_000_000_000);
        assert_eq!(c.update(1_000, SEC), CounterUpdate::Baseline);
        assert_eq!(c.update(51_000, SEC), CounterUpdate::Delta(50_000));
        assert_eq!(c.update(51_000, SEC), CounterUpdate::Delta(0));
    }

    #[test]
    fn wrap_uses_max_range() {
        let max = 262_143_328_850;
        let mut c = EnergyCounter::new(max);
        c.update(max - 10_000_000, SEC);
        // 10 J up to the maximum, then 5 J after restarting at 0.
        assert_eq!(c.update(5_000_000, SEC), CounterUpdate::Delta(15_000_000));
    }

    #[test]
    fn too_much_power_is_dropped_and_rebaselined() {
        let mut c = EnergyCounter::new(u64::MAX);
        c.update(0, SEC);
        // 53 kJ in one second (Scaphandre #147's spike).
        assert!(matches!(
            c.update(53_130_000_000, SEC),
            CounterUpdate::Implausible(Implausible::TooMuchPower { .. })
        ));
        assert_eq!(
            c.update(53_130_000_000 + 20_000_000, SEC),
            CounterUpdate::Delta(20_000_000)
        );
    }

    #[test]
    fn limit_scales_with_interval() {
        let mut c = EnergyCounter::new(u64::MAX);
        c.update(0, SEC);
        // 15 kJ is implausible in 1 s but fine (7.5 kW) in 2 s.
        assert!(matches!(
            c.update(15_000_000_000, SEC),
            CounterUpdate::Implausible(_)
        ));
        c.reset();
        c.update(0, SEC);
        assert_eq!(
            c.update(15_000_000_000, 2 * SEC),
            CounterUpdate::Delta(15_000_000_000)
        );
    }

    #[test]
    fn value_beyond_range_is_dropped_without_baseline() {
        let mut c = EnergyCounter::new(1_000);
        c.update(500, SEC);
        assert!(matches!(
            c.update(2_000, SEC),
            CounterUpdate::Implausible(Implausible::OutOfRange { .. })
        ));
        assert_eq!(c.update(600, SEC), CounterUpdate::Baseline);
    }

    #[test]
    fn reset_makes_a_baseline() {
        let mut c = EnergyCounter::new(u64::MAX);
        c.update(5, SEC);
        c.reset();
        assert_eq!(c.update(10, SEC), CounterUpdate::Baseline);
    }

    #[test]
    fn backwards_counter_without_range_is_implausible() {
        // A VM tree without max_energy_range_uj whose counter restarted at 0.
        let mut c = EnergyCounter::new(u64::MAX);
        c.update(1_000_000, SEC);
        assert!(matches!(c.update(10, SEC), CounterUpdate::Implausible(_)));
        assert_eq!(c.update(20, SEC), CounterUpdate::Delta(10));
    }
}
