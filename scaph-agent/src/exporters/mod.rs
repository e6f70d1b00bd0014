//! Exporters turn each finished `Snapshot` into something a person or a
//! system reads. None of them measures anything or owns a timer: the
//! [`driver`] receives the snapshots and hands them to one [`Sink`], which
//! only formats and sends (its encoding and its transport).
//!
//! An exporter is one file: its options (a `clap::Args` struct that
//! implements [`ExporterArgs`]) and its sink; `cli::Exporter` lists it.
pub mod driver;
#[cfg(test)]
mod golden;
#[cfg(test)]
pub(crate) use golden::fixture as golden_fixture;
pub mod http;
pub mod json;
pub mod json_file;
pub mod otlp;
pub mod points;
pub mod prometheus;
pub mod prometheus_push;
pub mod qemu;
pub mod qemu_fs;
pub mod retry;
pub mod riemann;
pub mod secret;
pub mod stdout;
pub mod warp10;
pub mod web;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    cli_ranges::MAX_STEP_SECS,
    metrics::{Family, MetricsState},
    snapshot::Snapshot,
};

/// One snapshot and, for the sinks built on [`crate::metrics`], its metric
/// families (empty for the others).
#[derive(Debug)]
pub struct Measurement {
    pub snapshot: Arc<Snapshot>,
    pub families: Vec<Family>,
}

/// Where measurements go: an encoding and a transport.
///
/// The driver calls `send` with the latest measurement, one call at a time.
/// A sink that is slower than the measurement step is handed only the
/// latest one (the metrics' bookkeeping still sees every snapshot). Failures
/// that the next measurement retries are the sink's to count and log
/// ([`retry::Retry`]); an `Err` ends the exporter.
pub trait Sink: Send + 'static {
    /// Whether `send` does blocking I/O (files, a terminal). The driver then
    /// runs it on a thread of its own, never on an async worker.
    const BLOCKING: bool = false;

    fn send(
        &mut self,
        measurement: &Measurement,
    ) -> impl Future<Output = Result<(), ExportError>> + Send;

    /// When the sink wants `send` called again with the latest measurement
    /// without waiting for a new one (a retry on its own timer, as otlp's
    /// backoff); `None`: at the next measurement.
    fn retry_at(&self) -> Option<Instant> {
        None
    }

    /// For the pull exporter: the bytes its server serves, which `send`
    /// publishes (`None`: the sink sends them itself).
    fn exposition(&self) -> Option<prometheus::Exposition> {
        None
    }
}

/// An exporter's options, as `scaph` runs it: implemented next to each
/// exporter's `clap::Args` struct, so that `main` handles them all alike.
pub trait ExporterArgs {
    type Sink: Sink;

    /// The subcommand, as the banner says it.
    fn name(&self) -> &'static str;

    /// Time between two measurements (kept within the accepted range even
    /// for options built without the command line: [`step`]).
    fn step(&self) -> Duration;

    /// Whether the sink sends the metric families (which then also carry
    /// scaph's own footprint and, with --scaphandre-compat, host statistics).
    fn uses_metrics(&self) -> bool {
        true
    }

    /// The exporter's `--qemu`: a vmname label on qemu/KVM guest processes.
    fn qemu(&self) -> bool {
        false
    }

    /// Whether the exporter matches command lines (a regex filter), which
    /// must then be read even when none is shown.
    fn matches_cmdlines(&self) -> bool {
        false
    }

    /// How long the exporter runs (`None`: until stopped).
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Run before anything is loaded, so that it fails at once: the pull
    /// exporter binds its port and reads its web configuration.
    fn listen(&self) -> impl Future<Output = anyhow::Result<Option<prometheus::Server>>> {
        std::future::ready(Ok(None))
    }

    /// The sink, built once measurement has started.
    ///
    /// # Errors
    /// Options that cannot be used (files, certificates, passwords...).
    fn sink(&self, context: &SinkContext<'_>) -> anyhow::Result<Self::Sink>;
}

/// What a sink is built with besides its own options.
pub struct SinkContext<'a> {
    /// Characters of each command line shown (`--cmdline-max-len`).
    pub cmdline_max_len: usize,
    /// The metrics the sink is fed with, when it uses them.
    pub metrics: Option<&'a MetricsState>,
}

/// Work that runs with the chosen exporter's options, whatever their type
/// (`cli::Exporter::with_args`).
pub trait WithArgs<'a> {
    type Output;

    fn call<A: ExporterArgs>(self, args: &'a A) -> Self::Output;
}

/// `secs` seconds, within the accepted range of steps.
#[must_use]
pub fn step(secs: u64) -> Duration {
    Duration::from_secs(secs.clamp(1, MAX_STEP_SECS))
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}
