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
//! (1 s doubling to [`MAX_BACKOFF`], on its own timer: [`Sink::retry_at`])
//! and logged as [`super::retry`] says; scaph never stops for it. Only the
//! latest measurement waits to be sent: cumulative sums carry everything
//! before them, so nothing is lost by skipping the ones a down collector
//! missed, and memory stays at one request.
pub mod config;
pub mod encode;
pub mod send;

use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};

pub use config::OtlpArgs;

use super::{
    points,
    retry::{Retry, Throttle},
    ExportError, ExporterArgs, Measurement, Sink, SinkContext,
};

/// Longest wait between two attempts to reach a collector that is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl ExporterArgs for OtlpArgs {
    type Sink = OtlpSink;

    fn name(&self) -> &'static str {
        "otlp"
    }

    fn step(&self) -> Duration {
        super::step(self.step)
    }

    fn qemu(&self) -> bool {
        self.qemu
    }

    fn sink(&self, _: &SinkContext<'_>) -> anyhow::Result<Self::Sink> {
        OtlpSink::from_args(self)
    }
}

/// Encodes each measurement as one request and exports it.
pub struct OtlpSink {
    transport: send::Transport,
    resource: opentelemetry_proto::tonic::resource::v1::Resource,
    /// Start of the cumulative sums: the first measurement's.
    start: Option<SystemTime>,
    retry: Retry,
    /// Answers that rejected some points (a collector's limits: every step).
    rejected: Throttle,
}

impl OtlpSink {
    /// # Errors
    /// Bad options, variables or TLS files.
    pub fn from_args(args: &OtlpArgs) -> anyhow::Result<Self> {
        let settings = config::resolve(args, &|name| std::env::var(name).ok())?;
        let transport = send::Transport::new(&settings)?;
        info!(
            "otlp: exporting to {} ({:?}{}) every {} s",
            send::shown(&settings.endpoint),
            settings.protocol,
            if settings.gzip { ", gzip" } else { "" },
            args.step
        );
        Ok(Self {
            transport,
            resource: encode::resource(&points::hostname()),
            start: None,
            retry: Retry::backoff(module_path!(), Duration::from_secs(1), MAX_BACKOFF),
            rejected: Throttle::default(),
        })
    }
}

impl Sink for OtlpSink {
    /// A failed export is never replayed: the attempt after the backoff
    /// sends the latest measurement, whose cumulative sums carry everything
    /// the failed one held.
    async fn send(&mut self, measurement: &Measurement) -> Result<(), ExportError> {
        if !self.retry.ready(Instant::now()) {
            return Ok(());
        }
        let since = *self
            .start
            .get_or_insert_with(|| encode::counting_since(measurement));
        let request = encode::request(measurement, &self.resource, since);
        let result = self.transport.export(request).await;
        let now = Instant::now();
        match result {
            Ok(answer) => {
                let url = self.transport.url();
                self.retry.succeeded(|n| {
                    format!("otlp: {url} accepts metrics again after {n} failed attempts")
                });
                let partial = answer
                    .partial_success
                    .filter(|p| p.rejected_data_points > 0);
                if let Some(partial) = partial.filter(|_| self.rejected.due(now).is_some()) {
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
            Err(e) => self.retry.failed(now, |streak| {
                format!(
                    "otlp: export failed ({} in a row{}, then with backoff up to {MAX_BACKOFF:?}): {}",
                    streak.failures,
                    streak.next_try(),
                    with_causes(&e)
                )
            }),
        }
        Ok(())
    }

    /// After a failure, the measurement is sent again when the backoff ends,
    /// without waiting for the next one.
    fn retry_at(&self) -> Option<Instant> {
        self.retry.retry_at()
    }
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
