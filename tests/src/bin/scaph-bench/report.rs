//! The markdown tables of BENCHMARKS.md.
use std::fmt::Write as _;

/// How a figure compares with its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No target.
    None,
    Met,
    Missed,
    /// The measurement cannot tell (a confidence interval spans the target).
    Undecided,
}

impl Verdict {
    /// Met or missed.
    pub fn of(met: bool) -> Self {
        if met {
            Self::Met
        } else {
            Self::Missed
        }
    }
}

pub struct Table {
    title: String,
    rows: Vec<String>,
}

impl Table {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    /// A measured figure with min / median / max and its target.
    #[allow(clippy::too_many_arguments)]
    pub fn row(
        &mut self,
        what: &str,
        min: f64,
        median: f64,
        max: f64,
        unit: &str,
        target: &str,
        met: bool,
    ) {
        let verdict = if target == "—" {
            Verdict::None
        } else if met {
            Verdict::Met
        } else {
            Verdict::Missed
        };
        self.verdict_row(what, [min, median, max], unit, target, verdict);
    }

    /// A row whose three columns the label names, with its verdict.
    pub fn verdict_row(
        &mut self,
        what: &str,
        [a, b, c]: [f64; 3],
        unit: &str,
        target: &str,
        verdict: Verdict,
    ) {
        let verdict = match verdict {
            Verdict::None => "",
            Verdict::Met => "met",
            Verdict::Missed => "**MISSED**",
            Verdict::Undecided => "undecided",
        };
        self.rows.push(format!(
            "| {what} | {a:.3} | {b:.3} | {c:.3} | {unit} | {target} | {verdict} |"
        ));
    }

    /// A single figure.
    pub fn figure(&mut self, what: &str, value: f64, unit: &str, target: &str, met: bool) {
        self.row(what, value, value, value, unit, target, met);
    }

    pub fn render(&self) -> String {
        let mut s = format!("## {}\n\n| measure | min | median | max | unit | target | |\n|---|---|---|---|---|---|---|\n", self.title);
        for row in &self.rows {
            let _ = writeln!(s, "{row}");
        }
        s
    }
}
