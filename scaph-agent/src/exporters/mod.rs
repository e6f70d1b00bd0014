//! Exporters turn each finished `Snapshot` into something a person or a
//! system reads. None of them measures anything or owns a timer: the
//! [`driver`] receives the snapshots and hands them to one [`Sink`], which
//! only formats and sends (its encoding and its transport).
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

use std::{future::Future, sync::Arc};

use crate::{metrics::Family, snapshot::Snapshot};

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
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}
