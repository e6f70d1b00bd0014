//! Families of samples and their Prometheus text encoding (format 0.0.4).
//!
//! Hand-rolled on purpose: Scaphandre's compatibility names include counters
//! without `_total` (`scaph_host_energy_microjoules`), which an OpenMetrics
//! encoder would rename, and Prometheus needs the 0.0.4 content type below.
use std::fmt::Write as _;

use super::names::{Def, Kind};

/// The Content-Type of [`encode`]'s output. Prometheus 3 refuses a scrape
/// without one (Scaphandre sent none).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family: a definition and its samples, written under a single
/// HELP/TYPE header.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub def: &'static Def,
    pub samples: Vec<Sample>,
}

/// One series: label pairs (in output order) and a value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
    /// Who the series belongs to beyond its labels (a process's start time;
    /// 0 for most series). Not written out: a new owner of the same labels
    /// (a reused pid) is a new series to the counter guard, so its lower
    /// value reads as a reset instead of being held.
    pub owner: u64,
}

impl Family {
    #[must_use]
    pub fn new(def: &'static Def) -> Self {
        Self {
            def,
            samples: Vec::new(),
        }
    }

    /// A family with a single unlabelled sample.
    #[must_use]
    pub fn single(def: &'static Def, value: f64) -> Self {
        Self {
            def,
            samples: vec![Sample {
                labels: Vec::new(),
                value,
                owner: 0,
            }],
        }
    }

    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.push_owned(labels, value, 0);
    }

    /// [`Family::push`] for a series with an owner (see [`Sample::owner`]).
    pub fn push_owned(&mut self, labels: Vec<(&'static str, String)>, value: f64, owner: u64) {
        self.samples.push(Sample {
            labels,
            value,
            owner,
        });
    }
}

/// Writes the families in the text exposition format. Empty families are
/// left out, so a scraper never sees a TYPE without samples.
#[must_use]
pub fn encode(families: &[Family]) -> String {
    let mut out = String::with_capacity(families.iter().map(|f| 120 + f.samples.len() * 80).sum());
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        let def = family.def;
        let kind = match def.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", def.name, escape_help(def.help));
        let _ = writeln!(out, "# TYPE {} {kind}", def.name);
        for sample in &family.samples {
            out.push_str(def.name);
            write_labels(&mut out, &sample.labels);
            out.push(' ');
            out.push_str(&format_value(sample.value));
            out.push('\n');
        }
    }
    out
}

/// `name{a="x",b="y"}` style label block (nothing when there are no labels).
pub fn write_labels(out: &mut String, labels: &[(&'static str, String)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(out, value);
        out.push('"');
    }
    out.push('}');
}

/// Values as Prometheus parses them: `+Inf`, `-Inf`, `NaN`, else the
/// shortest decimal that round-trips (Rust never writes an exponent here).
#[must_use]
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::names;

    #[test]
    fn label_values_are_escaped() {
        let mut family = Family::new(&names::PROCESS_INFO);
        family.push(vec![("cmdline", "a \"b\"\\c\nd".into())], 1.0);
        let text = encode(&[family]);
        assert!(
            text.contains(r#"scaph_process_info{cmdline="a \"b\"\\c\nd"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn special_values_use_prometheus_spelling() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(1e-7), "0.0000001");
        assert_eq!(format_value(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn one_header_per_family_and_empty_families_are_left_out() {
        let mut a = Family::new(&names::HOST_ENERGY);
        a.push(Vec::new(), 1.5);
        let empty = Family::new(&names::IDLE_ENERGY);
        let text = encode(&[a, empty]);
        assert_eq!(text.matches("# TYPE").count(), 1);
        assert!(!text.contains("scaph_idle_energy"));
        assert!(text.ends_with("scaph_host_energy_joules_total 1.5\n"));
    }
}
