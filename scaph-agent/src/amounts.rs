//! Energy, CPU time and emissions counted together, and the one conversion
//! from joules to grams of CO2-equivalent (made once per cycle, by the
//! energy accumulator). Plain arithmetic shared by the measurement side
//! (container totals) and the metrics (process series): neither imports the
//! other for it.

/// Joules in one kilowatt-hour.
pub const JOULES_PER_KWH: f64 = 3.6e6;

/// Grams of CO2-equivalent for `joules` at `grams_per_kwh`.
#[must_use]
pub fn grams(joules: f64, grams_per_kwh: f64) -> f64 {
    joules * grams_per_kwh / JOULES_PER_KWH
}

/// Energy (joules), CPU time (seconds) and the emissions of that energy
/// (grams, 0 without a carbon intensity).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Amounts {
    pub joules: f64,
    pub cpu_seconds: f64,
    /// Grams of CO2-equivalent of those joules (0 without a carbon
    /// intensity), counted by the agent every cycle at that cycle's intensity.
    pub grams: f64,
}

impl Amounts {
    /// `self − other`, never below zero.
    #[must_use]
    pub fn minus(self, other: Self) -> Self {
        Self {
            joules: (self.joules - other.joules).max(0.0),
            cpu_seconds: (self.cpu_seconds - other.cpu_seconds).max(0.0),
            grams: (self.grams - other.grams).max(0.0),
        }
    }

    pub fn add(&mut self, other: Self) {
        self.joules += other.joules;
        self.cpu_seconds += other.cpu_seconds;
        self.grams += other.grams;
    }

    /// Moves `last` (the previous totals) to `now`, never backwards, and
    /// returns the growth.
    #[must_use]
    pub fn advance(last: &mut Self, now: Self) -> Self {
        let grown = now.max(*last);
        let delta = grown.minus(*last);
        *last = grown;
        delta
    }

    /// Field-wise maximum.
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        Self {
            joules: self.joules.max(other.joules),
            cpu_seconds: self.cpu_seconds.max(other.cpu_seconds),
            grams: self.grams.max(other.grams),
        }
    }
}
