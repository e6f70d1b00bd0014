//! `scaph json`: one JSON object per line (JSON Lines), one line per
//! measurement.
//!
//! Each line is complete before it is written and flushed, so the output is
//! valid at any moment it is cut: every line parses on its own. (Scaphandre
//! wrote one array that was invalid until the program ended cleanly.)
//!
//! Field names follow Scaphandre's report where they exist (`consumption` in
//! microwatts, `exe`, `cmdline`, `pid`, `sockets[].domains[]`), next to
//! base-unit fields (`power_watts`, `energy_joules`).
use std::{
    borrow::Cow,
    io::Write,
    path::PathBuf,
    time::{Duration, UNIX_EPOCH},
};

use anyhow::Context as _;
use regex::Regex;
use serde::Serialize;

use super::{json_file::FileOutput, ExportError, ExporterArgs, Measurement, Sink, SinkContext};
use crate::{
    cli_ranges as ranges, label,
    snapshot::{Energy, ProcessSnapshot, Snapshot},
};

/// `scaph json` options.
#[derive(Clone, Debug, clap::Args)]
pub struct JsonArgs {
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(short, long, allow_negative_numbers = true, value_parser = ranges::timeout)]
    pub timeout: Option<i64>,

    /// Seconds between measurements.
    #[arg(short, long, default_value_t = 2, value_parser = ranges::json_step)]
    pub step: u64,

    /// Nanoseconds added to --step.
    #[arg(long, default_value_t = 0, value_parser = ranges::step_nano)]
    pub step_nano: u32,

    /// How many of the top consumers each line lists.
    #[arg(long, default_value_t = 10, value_parser = ranges::count)]
    pub max_top_consumers: usize,

    /// Write to this file (created or truncated) instead of stdout. A symbolic link is followed
    /// only when it and its existing target belong to scaph's user. Lines that cannot be written
    /// (full disk) are dropped and logged; measuring goes on.
    #[arg(short, long)]
    pub file: Option<PathBuf>,

    /// List only processes whose exe, comm or cmdline matches this regex (still at most --max-top-consumers).
    #[arg(long)]
    pub process_regex: Option<String>,
}

impl ExporterArgs for JsonArgs {
    type Sink = JsonSink<Box<dyn Write + Send>>;

    fn name(&self) -> &'static str {
        "json"
    }

    fn step(&self) -> Duration {
        let step = Duration::from_secs(self.step)
            .saturating_add(Duration::from_nanos(u64::from(self.step_nano)));
        step.clamp(
            ranges::MIN_JSON_STEP,
            Duration::from_secs(ranges::MAX_STEP_SECS),
        )
    }

    fn uses_metrics(&self) -> bool {
        false
    }

    fn matches_cmdlines(&self) -> bool {
        self.process_regex.is_some()
    }

    /// Negative: no limit.
    fn timeout(&self) -> Option<Duration> {
        self.timeout
            .and_then(|t| u64::try_from(t).ok())
            .map(Duration::from_secs)
    }

    fn sink(&self, context: &SinkContext<'_>) -> anyhow::Result<Self::Sink> {
        JsonSink::from_args(self, context.cmdline_max_len)
    }
}

/// Which processes a line lists.
#[derive(Debug)]
pub struct Consumers {
    /// At most this many, highest power first.
    pub max: usize,
    /// Only those whose exe, comm or cmdline matches.
    pub regex: Option<Regex>,
    /// Longest `cmdline`, in characters; 0 leaves it empty (`--cmdline-max-len`).
    pub cmdline_max_len: usize,
}

pub struct JsonSink<W: Write> {
    out: W,
    consumers: Consumers,
}

impl JsonSink<Box<dyn Write + Send>> {
    /// The exporter of `scaph json`, showing command lines cut to
    /// `cmdline_max_len` characters.
    ///
    /// # Errors
    /// An invalid `--process-regex`, or a `--file` that cannot be opened.
    pub fn from_args(args: &JsonArgs, cmdline_max_len: usize) -> anyhow::Result<Self> {
        let regex = match &args.process_regex {
            Some(re) => {
                Some(Regex::new(re).with_context(|| format!("invalid --process-regex {re:?}"))?)
            }
            None => None,
        };
        let consumers = Consumers {
            max: args.max_top_consumers,
            regex,
            cmdline_max_len,
        };
        let out: Box<dyn Write + Send> = match &args.file {
            Some(path) => Box::new(FileOutput::create(path).context("opening the --file output")?),
            None => Box::new(std::io::stdout()),
        };
        Ok(Self::new(out, consumers))
    }
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, consumers: Consumers) -> Self {
        Self { out, consumers }
    }

    /// Where the lines go.
    pub fn output(&self) -> &W {
        &self.out
    }
}

impl<W: Write + Send + 'static> Sink for JsonSink<W> {
    /// Files and pipes can block.
    const BLOCKING: bool = true;

    /// One `write_all` of the whole line, so that an output that writes a
    /// line whole or not at all ([`FileOutput`]) can.
    async fn send(&mut self, measurement: &Measurement) -> Result<(), ExportError> {
        let line = line(&measurement.snapshot, &self.consumers)?;
        self.out.write_all(line.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }
}

/// The line of one snapshot, `\n` included.
///
/// # Errors
/// Never in practice (every field serializes); kept from serde.
pub fn line(snapshot: &Snapshot, consumers: &Consumers) -> Result<String, serde_json::Error> {
    let mut line = serde_json::to_string(&Report::new(snapshot, consumers))?;
    line.push('\n');
    Ok(line)
}

#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Unix time, seconds, at the end of the measurement.
    pub timestamp: f64,
    /// Length of the measurement step, seconds.
    pub interval_seconds: f64,
    /// Energy sensor name (`powercap_rapl`, `estimate`, `vm`), or null.
    pub sensor: Option<&'static str>,
    /// True when energy is computed from CPU use, not measured.
    pub estimated: bool,
    /// Where CPU time comes from: `bpf` or `procfs`.
    pub source: &'static str,
    pub host: Option<Power>,
    /// Energy no process claimed.
    pub idle: Option<Power>,
    pub sockets: Vec<Socket>,
    pub consumers: Vec<Consumer<'a>>,
    pub losses: Losses,
}

/// Power over the last step and energy since scaph started.
#[derive(Debug, Serialize)]
pub struct Power {
    /// Microwatts (Scaphandre's unit).
    pub consumption: f64,
    pub power_watts: f64,
    pub energy_joules: f64,
}

impl From<Energy> for Power {
    fn from(e: Energy) -> Self {
        Self {
            consumption: e.watts * 1e6,
            power_watts: e.watts,
            energy_joules: e.joules_total,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Socket {
    pub id: u32,
    #[serde(flatten)]
    pub power: Power,
    pub idle: Option<Power>,
    pub domains: Vec<Domain>,
}

#[derive(Debug, Serialize)]
pub struct Domain {
    pub name: String,
    #[serde(flatten)]
    pub power: Power,
}

#[derive(Debug, Serialize)]
pub struct Consumer<'a> {
    pub pid: u32,
    /// Bounded, like every value from outside (see [`crate::label`]).
    pub comm: Cow<'a, str>,
    /// Full path, or empty when unknown (kernel threads).
    pub exe: String,
    /// Arguments joined by spaces, bounded; empty unless `--cmdline-max-len`
    /// (or `--scaphandre-compat`) asks for it.
    pub cmdline: String,
    /// Microwatts; null without an energy source.
    pub consumption: Option<f64>,
    pub power_watts: Option<f64>,
    pub energy_joules: Option<f64>,
    /// Share of one CPU over the last step.
    pub cpu_ratio: f64,
    pub cpu_seconds: f64,
    pub exited: bool,
}

#[derive(Debug, Serialize)]
pub struct Losses {
    pub dropped_cpu_seconds: f64,
    pub dropped_slices: u64,
    pub dropped_exits: u64,
    pub implausible_energy_deltas: u64,
}

impl<'a> Report<'a> {
    #[must_use]
    pub fn new(snap: &'a Snapshot, consumers: &Consumers) -> Self {
        let listed = snap
            .processes
            .iter()
            .filter(|p| !p.exited || p.cpu_ratio > 0.0)
            .filter(|p| consumers.regex.as_ref().is_none_or(|re| matches(re, p)))
            .take(consumers.max)
            .map(|p| Consumer::new(p, consumers.cmdline_max_len))
            .collect();
        Self {
            timestamp: snap
                .timestamp
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            interval_seconds: snap.interval.as_secs_f64(),
            sensor: snap.sensor.as_ref().map(|s| s.name),
            estimated: snap
                .sensor
                .as_ref()
                .is_some_and(crate::snapshot::SensorInfo::estimated),
            source: snap.cpu_method.source(),
            host: snap.host.map(Power::from),
            idle: snap.idle.map(Power::from),
            sockets: snap
                .sockets
                .iter()
                .map(|s| Socket {
                    id: s.id,
                    power: s.energy.into(),
                    idle: s.idle.map(Power::from),
                    domains: s
                        .domains
                        .iter()
                        .map(|d| Domain {
                            name: d.name.clone(),
                            power: d.energy.into(),
                        })
                        .collect(),
                })
                .collect(),
            consumers: listed,
            losses: Losses {
                dropped_cpu_seconds: snap.losses.dropped_ns as f64 / 1e9,
                dropped_slices: snap.losses.dropped_slices,
                dropped_exits: snap.losses.dropped_exits,
                implausible_energy_deltas: snap.implausible_energy_dropped,
            },
        }
    }
}

fn matches(re: &Regex, p: &ProcessSnapshot) -> bool {
    re.is_match(&p.exe_or_comm()) || re.is_match(&p.comm) || re.is_match(p.cmdline())
}

impl<'a> Consumer<'a> {
    fn new(p: &'a ProcessSnapshot, cmdline_max_len: usize) -> Self {
        Self {
            pid: p.key.pid,
            comm: label::bound(&p.comm, label::MAX_CHARS),
            exe: crate::metrics::collect::exe(p),
            cmdline: if cmdline_max_len > 0 {
                label::bound(p.cmdline(), cmdline_max_len).into_owned()
            } else {
                String::new()
            },
            consumption: p.energy.map(|e| e.watts * 1e6),
            power_watts: p.energy.map(|e| e.watts),
            energy_joules: p.energy.map(|e| e.joules_total),
            cpu_ratio: p.cpu_ratio,
            cpu_seconds: p.cpu_seconds_total,
            exited: p.exited,
        }
    }
}
