//! Exporters turn the latest `Snapshot` into something a person or a system
//! reads. None of them measures anything or owns a measurement timer.
#[cfg(test)]
mod golden;
#[cfg(test)]
pub(crate) use golden::fixture as golden_fixture;
pub mod json;
pub mod json_file;
pub mod otlp;
pub mod prometheus;
pub mod prometheus_push;
pub mod push;
pub mod qemu;
pub mod qemu_fs;
pub mod riemann;
pub mod secret;
pub mod stdout;
pub mod warp10;
pub mod web;

use bytes::Bytes;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    agent::SnapshotRx,
    metrics::{encode, MetricsState},
    snapshot::Snapshot,
};

/// An exporter that is handed each new snapshot (push style).
pub trait Exporter {
    fn export(&mut self, snapshot: &Snapshot) -> Result<(), ExportError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The encoded exposition of the latest snapshot.
pub type Exposition = watch::Receiver<Bytes>;

/// Feeds every snapshot, in order, to the metrics state and publishes the
/// encoded text. Readers (scrapes, pushes) only clone the latest text: they
/// never wait for measurement, and measurement never waits for them. The task
/// ends when the measurement thread stops.
#[must_use]
pub fn publish(mut snapshots: SnapshotRx, mut state: MetricsState) -> (Exposition, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Bytes::from(encode(&state.before_first_measurement())));
    let task = tokio::spawn(async move {
        // The exposition at scale (a series per process) allocates and frees
        // tens of MB per cycle, which the allocator would otherwise keep.
        let mut trim = crate::util::GrowthTrim::default();
        while snapshots.changed().await.is_ok() {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                let text = encode(&state.update(&snapshot));
                tx.send_replace(Bytes::from(text));
                let started = std::time::Instant::now();
                if trim.after_cycle() {
                    log::debug!(
                        "free heap given back to the system in {:?}",
                        started.elapsed()
                    );
                }
            }
        }
    });
    (rx, task)
}
