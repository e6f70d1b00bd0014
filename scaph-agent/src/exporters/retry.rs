//! The one policy every exporter follows when sending fails: when to try
//! again, and when to say so.
//!
//! - Retry: at the next measurement, or (with [`Retry::backoff`]) after a
//!   wait that doubles from `min` to `max` and resets on success.
//! - Log ([`Throttle`]): the first failure, then at most one line per
//!   [`LOG_EVERY`] (each with the count so far), at `warn`; the end of a
//!   streak whose failure was logged, at `info` (prometheus-push: `warn`,
//!   as it always was). A server that is down, one
//!   that fails every other step, or a full disk never floods the log.
use std::time::{Duration, Instant};

use log::{log, warn, Level};

/// At most one line per this period for one recurring condition.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Rate limit for a log line about a condition that recurs: the first
/// occurrence, then at most one per [`LOG_EVERY`]. Every rate-limited
/// line of the exporters goes through one.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    /// Occurrences not logged since the last line.
    held: u64,
}

impl Throttle {
    /// Counts one occurrence at `now`; returns how many occurred since the
    /// last line (this one included) when a line is due now.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        self.held += 1;
        let due = self
            .last
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_EVERY);
        due.then(|| {
            self.last = Some(now);
            std::mem::take(&mut self.held)
        })
    }
}

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
    /// Kept across streaks: a destination that fails every other step is
    /// still logged at most once per [`LOG_EVERY`].
    throttle: Throttle,
    /// Whether a failure of the current streak was logged (then so is its end).
    streak_logged: bool,
    recovery_level: Level,
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
            throttle: Throttle {
                last: None,
                held: 0,
            },
            streak_logged: false,
            recovery_level: Level::Info,
        }
    }

    /// Logs the end of a streak at `level` instead of `info`.
    #[must_use]
    pub const fn recovery_at(mut self, level: Level) -> Self {
        self.recovery_level = level;
        self
    }

    /// Whether an attempt may be made at `now`.
    #[must_use]
    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// When the next attempt is due after a failure that waits (`None`:
    /// no failure, or the next measurement).
    #[must_use]
    pub const fn retry_at(&self) -> Option<Instant> {
        self.not_before
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
        self.throttle.due(now).map(|_| {
            self.streak_logged = true;
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

    /// Records a success. Returns the failures of the streak it ends when
    /// a failure of that streak was logged (its end deserves a line too).
    pub fn record_success(&mut self) -> Option<u64> {
        self.next_wait = self.min;
        self.not_before = None;
        let failures = std::mem::take(&mut self.failures);
        std::mem::take(&mut self.streak_logged).then_some(failures)
    }

    /// Records a success; logs `message(failures)` (at `info` unless
    /// [`Retry::recovery_at`] says otherwise) when it ends a streak that
    /// was logged.
    pub fn succeeded(&mut self, message: impl FnOnce(u64) -> String) {
        if let Some(failures) = self.record_success() {
            log!(target: self.target, self.recovery_level, "{}", message(failures));
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
                r.retry_at().map_or(0, |t| (t - t0).as_secs())
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert!(!r.ready(t0 + 4 * SEC));
        assert!(r.ready(t0 + 5 * SEC));
        assert_eq!(r.record_success(), Some(5));
        assert!(r.ready(t0));
        assert_eq!(r.retry_at(), None);
        r.record_failure(t0);
        assert_eq!(r.retry_at(), Some(t0 + SEC));
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
        assert_eq!(r.retry_at(), None);
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
        assert_eq!(
            r.record_success(),
            Some(8),
            "a logged streak's end is logged"
        );
        // A new streak within the minute is not logged, nor is its end.
        assert_eq!(r.record_failure(t0 + 121 * SEC), None);
        assert_eq!(r.record_success(), None);
        let streak = r.record_failure(t0 + 180 * SEC).expect("logged");
        assert_eq!(streak.failures, 1);
        assert_eq!(streak.next_try(), "");
    }

    /// A destination failing every other step: one failure line (and its
    /// recovery) per minute, not two lines per step.
    #[test]
    fn alternating_failures_are_logged_once_a_minute() {
        let t0 = Instant::now();
        let mut r = Retry::every_step(module_path!());
        let mut lines = 0;
        for s in 0..120 {
            let now = t0 + s * SEC;
            if s % 2 == 0 {
                lines += usize::from(r.record_failure(now).is_some());
            } else {
                lines += usize::from(r.record_success().is_some());
            }
        }
        assert_eq!(lines, 4, "two failures and their two recoveries");
    }

    #[test]
    fn throttle_counts_what_it_held_back() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        assert_eq!(t.due(t0), Some(1));
        assert_eq!(t.due(t0 + SEC), None);
        assert_eq!(t.due(t0 + 30 * SEC), None);
        assert_eq!(t.due(t0 + 60 * SEC), Some(3));
    }
}
