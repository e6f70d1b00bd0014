//! Every time a counter would have gone backwards: counted for
//! `scaph_monotonicity_violations_total` and logged at warn, boundedly.
//!
//! Counters are kept monotonic by holding a lower value at the previous one
//! (Prometheus reads any decrease as a reset). That guard hides the bug that
//! produced the lower value, so each use of it is counted here, and the first
//! few of each source are logged with the series and the two values. The log
//! volume is bounded whatever happens: at most [`LOGGED_PER_SOURCE`] lines
//! per source, sources are static names, and a series description (which may
//! hold a process name chosen by anyone) is cut to [`MAX_DETAIL_CHARS`].
//!
//! Used by the metrics (the exposition guard, the ledger) and by the agent,
//! which logs what the energy accumulator refused whatever the exporter.
use std::collections::HashMap;

use log::warn;

use super::names::MONOTONICITY_VIOLATIONS;
use crate::label::bound;

/// Regressions logged per source; the rest are only counted.
pub const LOGGED_PER_SOURCE: u32 = 3;
/// Longest series description in a log line, in characters.
pub const MAX_DETAIL_CHARS: usize = 200;

/// Regressions counted so far, and how many of each source were logged.
#[derive(Debug, Default)]
pub struct Regressions {
    total: u64,
    logged: HashMap<&'static str, u32>,
    /// Every line logged, for tests.
    #[cfg(test)]
    pub lines: Vec<String>,
}

impl Regressions {
    /// Regressions counted so far.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts one regression of `source` (a metric name or a stage of the
    /// pipeline): the series `detail` names would have gone from `before`
    /// to `after`, and `before` was kept. Logs it at warn unless this source
    /// was logged [`LOGGED_PER_SOURCE`] times already; returns the line
    /// logged. Only `detail` is cut to [`MAX_DETAIL_CHARS`], so the values
    /// are always in the line.
    pub fn note(
        &mut self,
        source: &'static str,
        detail: impl FnOnce() -> String,
        before: f64,
        after: f64,
    ) -> Option<String> {
        self.total = self.total.saturating_add(1);
        self.emit(source, 1, || {
            let detail = detail();
            format!(
                "{} went from {before} to {after}; kept {before}",
                bound(&detail, MAX_DETAIL_CHARS)
            )
        })
    }

    /// Logs `count` regressions counted elsewhere, described by `what` (cut
    /// to [`MAX_DETAIL_CHARS`]), with the same bound per source as
    /// [`Regressions::note`].
    pub fn log(
        &mut self,
        source: &'static str,
        count: u64,
        what: impl FnOnce() -> String,
    ) -> Option<String> {
        self.emit(source, count, || {
            bound(&what(), MAX_DETAIL_CHARS).into_owned()
        })
    }

    fn emit(
        &mut self,
        source: &'static str,
        count: u64,
        what: impl FnOnce() -> String,
    ) -> Option<String> {
        if count == 0 {
            return None;
        }
        let logged = self.logged.entry(source).or_default();
        if *logged >= LOGGED_PER_SOURCE {
            return None;
        }
        *logged += 1;
        let mut line = format!(
            "counter regression: {} (counted in {}; a bug to report)",
            what(),
            MONOTONICITY_VIOLATIONS.name
        );
        if count > 1 {
            line.push_str(&format!(" [{count} at once]"));
        }
        if *logged == LOGGED_PER_SOURCE {
            line.push_str(&format!(
                "; further regressions from {source} are counted but not logged"
            ));
        }
        warn!("{line}");
        #[cfg(test)]
        self.lines.push(line.clone());
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_regression_counts_and_only_the_first_few_per_source_are_logged() {
        let mut r = Regressions::default();
        let long = "x".repeat(10_000);
        let lines: Vec<Option<String>> = (0..10)
            .map(|i| r.note("src", || format!("a{{comm=\"{long}\"}}"), 5.0, f64::from(i)))
            .collect();
        assert_eq!(r.total(), 10);
        assert!(lines[..3].iter().all(Option::is_some));
        assert!(lines[3..].iter().all(Option::is_none), "{lines:?}");
        let first = lines[0].as_deref().expect("logged");
        assert!(
            first.starts_with("counter regression: a{comm=\"xxx"),
            "{first}"
        );
        assert!(
            first.contains("\u{2026} went from 5 to 0; kept 5 (counted in"),
            "a long series is cut, its values are kept: {first}"
        );
        assert!(
            first.len() < MAX_DETAIL_CHARS + 200,
            "{} bytes",
            first.len()
        );
        assert!(lines[2]
            .as_deref()
            .expect("logged")
            .ends_with("further regressions from src are counted but not logged"));
        let short = r
            .note("other", || "b".into(), 1.0, 0.5)
            .expect("own allowance");
        assert!(short.contains("b went from 1 to 0.5; kept 1"), "{short}");
        // Counted elsewhere: logged, not counted; a count of 0 is nothing.
        assert!(r
            .log("third", 2, || "c".into())
            .expect("logged")
            .ends_with("[2 at once]"));
        assert!(r.log("fourth", 0, || "d".into()).is_none());
        assert_eq!(r.total(), 11);
    }
}
