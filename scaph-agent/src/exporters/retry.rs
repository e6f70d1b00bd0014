//! The one policy every exporter follows when sending fails: when to try
//! again, and when to say so.
//!
//! - Retry: at the next measurement, or (with [`Retry::backoff`]) after a
//!   wait that doubles from `min` to `max` and resets on success.
//! - Log: the first failure of a streak, then at most one line per
//!   [`LOG_EVERY`] while it lasts (each with the count so far), and the
//!   recovery, all at `warn`. An unreachable server or a full disk never
//!   floods the log, and whoever saw the failure sees its end.
use std::time::{Duration, Instant};

use log::warn;

/// At most one line per streak of failures per this period, besides the first.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// A streak of failures, as a log line tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streak {
    /// Failures in a row, this one included.
    pub failures: u64,
    /// Wait before the next attempt (zero: the next measurement).
    pub wait: Duration,
}

/// Failure bookkeeping for one destination (a server, a file, a VM's tree).
#[derive(Debug)]
pub struct Retry {
    /// The log target: the exporter's module (`module_path!()`).
    target: &'static str,
    min: Duration,
    max: Duration,
    next_wait: Duration,
    not_before: Option<Instant>,
    failures: u64,
    last_logged: Option<Instant>,
}

impl Retry {
    /// Tries again at every measurement; logs as `target` (`module_path!()`).
    #[must_use]
    pub const fn every_step(target: &'static str) -> Self {
        Self::backoff(target, Duration::ZERO, Duration::ZERO)
    }

    /// Waits `min` after a first failure, doubling up to `max`; logs as
    /// `target` (`module_path!()`).
    #[must_use]
    pub const fn backoff(target: &'static str, min: Duration, max: Duration) -> Self {
        Self {
            target,
            min,
            max,
            next_wait: min,
            not_before: None,
            failures: 0,
            last_logged: None,
        }
    }

    /// Whether an attempt may be made at `now`.
    #[must_use]
    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// Failures in a row so far.
    #[must_use]
    pub const fn failures(&self) -> u64 {
        self.failures
    }

    /// Records a failure at `now`. Returns the streak when this failure
    /// deserves a log line (see the module), without logging it.
    pub fn record_failure(&mut self, now: Instant) -> Option<Streak> {
        self.failures += 1;
        let wait = self.next_wait;
        if !wait.is_zero() {
            self.not_before = Some(now + wait);
        }
        self.next_wait = (wait * 2).min(self.max);
        let due = self
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_EVERY);
        due.then(|| {
            self.last_logged = Some(now);
            Streak {
                failures: self.failures,
                wait,
            }
        })
    }

    /// Records a failure at `now`, and logs `message(streak)` when due.
    pub fn failed(&mut self, now: Instant, message: impl FnOnce(Streak) -> String) {
        if let Some(streak) = self.record_failure(now) {
            warn!(target: self.target, "{}", message(streak));
        }
    }

    /// Records a success; logs `message(failures)` when it ends a streak.
    pub fn succeeded(&mut self, message: impl FnOnce(u64) -> String) {
        self.next_wait = self.min;
        self.not_before = None;
        self.last_logged = None;
        let failures = std::mem::take(&mut self.failures);
        if failures > 0 {
            warn!(target: self.target, "{}", message(failures));
        }
    }
}

impl Streak {
    /// `; next try in 4s or later`, or nothing when the next try is the
    /// next measurement.
    #[must_use]
    pub fn next_try(&self) -> String {
        if self.wait.is_zero() {
            String::new()
        } else {
            format!("; next try in {:?} or later", self.wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_and_resets() {
        let t0 = Instant::now();
        let mut r = Retry::backoff(module_path!(), SEC, 5 * SEC);
        assert!(r.ready(t0));
        let waits: Vec<u64> = (0..5)
            .map(|_| {
                r.record_failure(t0);
                r.not_before.map_or(0, |t| (t - t0).as_secs())
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert!(!r.ready(t0 + 4 * SEC));
        assert!(r.ready(t0 + 5 * SEC));
        r.succeeded(|n| {
            assert_eq!(n, 5);
            String::new()
        });
        assert!(r.ready(t0));
        r.record_failure(t0);
        assert_eq!(r.not_before, Some(t0 + SEC));
    }

    #[test]
    fn every_step_never_waits() {
        let t0 = Instant::now();
        let mut r = Retry::every_step(module_path!());
        for _ in 0..3 {
            r.record_failure(t0);
            assert!(r.ready(t0));
        }
        assert_eq!(r.failures(), 3);
    }

    #[test]
    fn first_failure_then_once_a_minute() {
        let t0 = Instant::now();
        let mut r = Retry::every_step(module_path!());
        let logged: Vec<bool> = [0, 1, 2, 59, 60, 61, 119, 120]
            .iter()
            .map(|&s| r.record_failure(t0 + s * SEC).is_some())
            .collect();
        assert_eq!(
            logged,
            [true, false, false, false, true, false, false, true]
        );
        // A new streak is logged at once.
        r.succeeded(|_| String::new());
        let streak = r.record_failure(t0 + 121 * SEC).expect("logged");
        assert_eq!(streak.failures, 1);
        assert_eq!(streak.next_try(), "");
    }
}
