//! The markdown tables of BENCHMARKS.md.
use std::fmt::Write as _;

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
            ""
        } else if met {
            "met"
        } else {
            "**MISSED**"
        };
        self.rows.push(format!(
            "| {what} | {min:.3} | {median:.3} | {max:.3} | {unit} | {target} | {verdict} |"
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
