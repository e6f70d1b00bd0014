//! `scaph otlp`: the metrics of the prometheus exporters (same names,
//! labels and `estimated`) pushed as OpenTelemetry metrics after every
//! measurement, over OTLP/HTTP (protobuf) or OTLP/gRPC.
//!
//! - [`config`]: options and `OTEL_EXPORTER_OTLP_*`, in the specification's order.
//! - [`encode`]: families to an `ExportMetricsServiceRequest` (counters as
//!   cumulative monotonic sums, gauges as gauges; resource `host.name`,
//!   `service.name=scaph`, `service.version`).
//! - [`send`]: the HTTP and gRPC transports.
//!
//! A collector that is down or refuses a request is retried with backoff
//! (1 s doubling to [`MAX_BACKOFF`]) and logged (the 1st, 2nd, 4th...
//! failure in a row); scaph never stops for it. Only the latest measurement
//! waits to be sent: cumulative sums carry everything before them, so
//! nothing is lost by skipping the ones a down collector missed, and memory
//! stays at one request.
pub mod config;
pub mod encode;
pub mod send;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use log::{info, warn};

pub use config::OtlpArgs;

use super::push::{self, Backoff, Measurement};
use crate::{agent::SnapshotRx, metrics::MetricsState};

/// Longest wait between two attempts to reach a collector that is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Exports the metrics of every new snapshot until the measurement stops.
/// `metrics` is built with the exporter's `--qemu`.
///
/// # Errors
/// Only for bad options, variables or TLS files; network failures are retried.
pub async fn run(args: &OtlpArgs, metrics: MetricsState, rx: SnapshotRx) -> anyhow::Result<()> {
    let settings = config::resolve(args, &|name| std::env::var(name).ok())?;
    let mut transport = send::Transport::new(&settings)?;
    info!(
        "otlp: exporting to {} ({:?}{}) every {} s",
        send::shown(&settings.endpoint),
        settings.protocol,
        if settings.gzip { ", gzip" } else { "" },
        args.step
    );
    let resource = encode::resource(&push::hostname());
    let (mut measurements, _feeder) = push::feed(rx, metrics);
    let mut start = None;
    let mut pending: Option<Arc<Measurement>> = None;
    let mut backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = measurements.changed() => {
                if changed.is_err() {
                    break;
                }
                pending = measurements.borrow_and_update().clone();
            }
            () = retry, if pending.is_some() => {}
        }
        if !backoff.ready(Instant::now()) {
            continue;
        }
        let Some(measurement) = pending.clone() else {
            continue;
        };
        let since = *start.get_or_insert_with(|| encode::counting_since(&measurement));
        let request = encode::request(&measurement, &resource, since);
        match transport.export(request).await {
            Ok(answer) => {
                pending = None;
                retry_at = None;
                let failures = backoff.succeeded();
                if failures > 0 {
                    warn!(
                        "otlp: {} accepts metrics again after {failures} failed attempts",
                        transport.url()
                    );
                }
                if let Some(partial) = answer
                    .partial_success
                    .filter(|p| p.rejected_data_points > 0)
                {
                    warn!(
                        "otlp: the collector rejected {} data points: {}",
                        partial.rejected_data_points,
                        partial
                            .error_message
                            .chars()
                            .filter(|c| !c.is_control())
                            .take(300)
                            .collect::<String>()
                    );
                }
            }
            Err(e) => {
                let (wait, log) = backoff.failed(Instant::now());
                retry_at = Some(tokio::time::Instant::now() + wait);
                if log {
                    warn!(
                        "otlp: export failed ({} in a row; next try in {wait:?}, then with backoff up to {MAX_BACKOFF:?}): {}",
                        backoff.failures(),
                        with_causes(&e)
                    );
                }
            }
        }
    }
    Ok(())
}

/// An error and its causes, `: `-separated (reqwest's own message leaves
/// out why a connection failed).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
