//! `scaph stdout`: a summary for people, refreshed every step.
use std::{
    io::{IsTerminal as _, Write},
    time::Duration,
};

use anyhow::Context as _;
use regex::Regex;

use super::{ExportError, ExporterArgs, Measurement, Sink, SinkContext};
use crate::{
    cli_ranges as ranges, label, metrics,
    sensors::EnergyOrigin,
    snapshot::{Energy, ProcessSnapshot, Snapshot},
};

/// `scaph stdout` options.
#[derive(Clone, Debug, clap::Args)]
pub struct StdoutArgs {
    /// Stop after this many seconds (negative: run until interrupted).
    #[arg(short, long, default_value_t = 10, allow_negative_numbers = true, value_parser = ranges::timeout)]
    pub timeout: i64,

    /// Seconds between measurements.
    #[arg(short, long, default_value_t = 2, value_parser = ranges::step)]
    pub step: u64,

    /// How many of the top consumers to show.
    #[arg(short, long, default_value_t = 5, value_parser = ranges::count)]
    pub processes: usize,

    /// Show only processes whose exe or cmdline matches this regex (instead of the top N).
    #[arg(short, long, conflicts_with = "processes")]
    pub regex_filter: Option<String>,

    /// Print every metric as `name{labels} value` (what the prometheus exporter serves) instead of the summary.
    #[arg(long)]
    pub raw_metrics: bool,
}

impl ExporterArgs for StdoutArgs {
    type Sink = StdoutSink<std::io::Stdout>;

    fn name(&self) -> &'static str {
        "stdout"
    }

    fn step(&self) -> Duration {
        super::step(self.step)
    }

    fn uses_metrics(&self) -> bool {
        self.raw_metrics
    }

    fn matches_cmdlines(&self) -> bool {
        self.regex_filter.is_some()
    }

    /// Negative: no limit.
    fn timeout(&self) -> Option<Duration> {
        u64::try_from(self.timeout).ok().map(Duration::from_secs)
    }

    fn sink(&self, _: &SinkContext<'_>) -> anyhow::Result<Self::Sink> {
        StdoutSink::from_args(self)
    }
}

/// Which processes to list.
pub enum Selection {
    Top(usize),
    Matching(Regex),
}

pub struct StdoutSink<W: Write> {
    out: W,
    selection: Selection,
    /// Bold headings when the output is a terminal; plain text when piped.
    styled: bool,
    /// `--raw-metrics`: every metric instead of the summary.
    raw: bool,
}

impl StdoutSink<std::io::Stdout> {
    /// The exporter of `scaph stdout`.
    ///
    /// # Errors
    /// An invalid `--regex-filter`.
    pub fn from_args(args: &StdoutArgs) -> anyhow::Result<Self> {
        let selection = match &args.regex_filter {
            Some(re) => Selection::Matching(
                Regex::new(re).with_context(|| format!("invalid --regex-filter {re:?}"))?,
            ),
            None => Selection::Top(args.processes),
        };
        let out = std::io::stdout();
        let styled = out.is_terminal();
        Ok(Self::new(out, selection, styled).raw_metrics(args.raw_metrics))
    }
}

impl<W: Write> StdoutSink<W> {
    pub fn new(out: W, selection: Selection, styled: bool) -> Self {
        Self {
            out,
            selection,
            styled,
            raw: false,
        }
    }

    /// Prints every metric, as the prometheus exporter would serve it, one
    /// `name{labels} value` line each, instead of the summary (the driver
    /// must then be given the metrics).
    #[must_use]
    pub fn raw_metrics(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    fn heading(&self, text: &str) -> String {
        if self.styled {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

impl<W: Write + Send + 'static> Sink for StdoutSink<W> {
    /// A terminal or a pipe can block.
    const BLOCKING: bool = true;

    async fn send(&mut self, measurement: &Measurement) -> Result<(), ExportError> {
        let text = if self.raw {
            render_raw(&measurement.families)
        } else {
            render(&measurement.snapshot, &self.selection, |t| self.heading(t))
        };
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }
}

fn watts(energy: Option<Energy>) -> String {
    energy.map_or_else(|| "-".into(), |e| format!("{:.2} W", e.watts))
}

fn origin_label(origin: EnergyOrigin) -> &'static str {
    match origin {
        EnergyOrigin::Measured => "measured",
        EnergyOrigin::Estimated => {
            "ESTIMATED (no RAPL: linear model of CPU use, not a measurement)"
        }
        EnergyOrigin::Vm => "from the hypervisor (vm)",
    }
}

/// One line per sample, then a blank line.
#[must_use]
pub fn render_raw(families: &[metrics::Family]) -> String {
    let mut s = String::new();
    for family in families {
        for sample in &family.samples {
            s += family.def.name;
            metrics::text::write_labels(&mut s, &sample.labels);
            s.push(' ');
            s += &metrics::text::format_value(sample.value);
            s.push('\n');
        }
    }
    s.push('\n');
    s
}

/// The whole screen for one snapshot.
pub fn render(snap: &Snapshot, selection: &Selection, heading: impl Fn(&str) -> String) -> String {
    let mut s = String::new();
    let host = match (&snap.sensor, snap.host) {
        (Some(sensor), Some(host)) => {
            format!(
                "{:.2} W, {} ({})",
                host.watts,
                origin_label(sensor.origin),
                sensor.name
            )
        }
        (Some(sensor), None) => format!("waiting for a second reading ({})", sensor.name),
        (None, _) => "no energy source".into(),
    };
    s += &format!("{} {host}\n", heading("Host:"));
    s += &format!("  CPU time source: {}\n", snap.cpu_method);
    if let Some(idle) = snap.idle {
        s += &format!("  idle / unattributed: {:.2} W\n", idle.watts);
    }
    if snap.losses.dropped_slices > 0 {
        s += &format!(
            "  WARNING: {} slices ({:.3} s of CPU) could not be recorded (kernel map full)\n",
            snap.losses.dropped_slices,
            snap.losses.dropped_ns as f64 / 1e9
        );
    }
    for socket in &snap.sockets {
        let domains: Vec<String> = socket
            .domains
            .iter()
            .map(|d| format!("{} {:.2} W", d.name, d.energy.watts))
            .collect();
        s += &format!(
            "{} {:.2} W  {}\n",
            heading(&format!("Socket {}:", socket.id)),
            socket.energy.watts,
            domains.join("  ")
        );
    }
    let rows: Vec<&ProcessSnapshot> = match selection {
        Selection::Top(n) => snap
            .processes
            .iter()
            .filter(|p| !p.exited || p.cpu_ratio > 0.0)
            .take(*n)
            .collect(),
        Selection::Matching(re) => snap
            .processes
            .iter()
            .filter(|p| re.is_match(&p.exe_or_comm()) || re.is_match(p.cmdline()))
            .collect(),
    };
    let title = match selection {
        Selection::Top(n) => format!("Top {n} consumers:"),
        Selection::Matching(re) => format!("Processes matching /{re}/:"),
    };
    s += &format!("{}\n", heading(&title));
    s += &format!("  {:>10}  {:>7}  {:>8}  {}\n", "Power", "CPU", "PID", "Exe");
    for p in rows {
        s += &format!(
            "  {:>10}  {:>6.1}%  {:>8}  {}{}\n",
            watts(p.energy),
            p.cpu_ratio * 100.0,
            p.key.pid,
            // Anyone names their processes: no terminal escapes, bounded.
            label::path(&p.exe_or_comm()),
            if p.exited { " (exited)" } else { "" }
        );
    }
    s.push('\n');
    s
}
