//! The one loop that receives snapshots: it turns each into a
//! [`Measurement`] (through the metrics, when the sink uses them) and hands
//! the latest to the [`Sink`].
//!
//! Two halves, joined by a watch channel that holds the latest measurement:
//! measuring (every snapshot, in order, so the metrics' bookkeeping never
//! misses one), on a thread of its own; and sending (one `send` at a time,
//! on an async task, or on a thread of its own for a [`Sink::BLOCKING`]
//! sink). A sink that waits on a server never delays measurement,
//! measurement never waits for it, and neither runs on the thread that
//! waits for signals or on the workers that serve scrapes.
use std::{future::Future, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

use super::{ExportError, Measurement, Sink};
use crate::{agent::SnapshotRx, metrics::MetricsState};

type MeasurementRx = watch::Receiver<Option<Arc<Measurement>>>;

/// Feeds `sink` until measurement stops, or until `timeout` (stdout and
/// json's `--timeout`). The last measurement taken is sent before it returns.
/// `metrics` is given to sinks that send metric families.
///
/// # Errors
/// The sink's error, which ends the exporter (a closed stdout, for instance).
pub async fn run<S: Sink>(
    snapshots: SnapshotRx,
    metrics: Option<MetricsState>,
    sink: S,
    timeout: Option<Duration>,
) -> Result<(), ExportError> {
    let (tx, rx) = watch::channel(None);
    let mut sending = spawn_sender(sink, rx);
    // The metrics' update is CPU work (and container resolution reads
    // files): a blocking-pool thread, never a worker or the caller's thread.
    let measuring = on_own_thread(async move {
        let measure = measure(snapshots, metrics, tx);
        match timeout {
            Some(limit) => {
                let _ = tokio::time::timeout(limit, measure).await;
            }
            None => measure.await,
        }
        Ok(())
    });
    // Measuring ends with measurement, or at the timeout: its sender is
    // dropped then, and the sending half ends after the last measurement.
    let failed = tokio::select! {
        measured = measuring => {
            joined(measured)?;
            None
        }
        result = &mut sending => Some(result),
    };
    match failed {
        Some(result) => joined(result),
        None => joined(sending.await),
    }
}

fn joined(
    result: Result<Result<(), ExportError>, tokio::task::JoinError>,
) -> Result<(), ExportError> {
    match result {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Ok(()), // cancelled: the runtime is shutting down
    }
}

/// Runs `work` on a blocking-pool thread (waiting there blocks that thread only).
fn on_own_thread<F>(work: F) -> JoinHandle<Result<(), ExportError>>
where
    F: Future<Output = Result<(), ExportError>> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(work))
}

/// Every snapshot, in order, through the metrics; the latest is published.
/// Ends when measurement stops or when the sending half has ended.
async fn measure(
    mut snapshots: SnapshotRx,
    mut metrics: Option<MetricsState>,
    tx: watch::Sender<Option<Arc<Measurement>>>,
) {
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
        let snapshot = snapshots.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            let families = metrics
                .as_mut()
                .map_or_else(Vec::new, |m| m.update(&snapshot));
            tx.send_replace(Some(Arc::new(Measurement { snapshot, families })));
        }
    }
}

fn spawn_sender<S: Sink>(sink: S, rx: MeasurementRx) -> JoinHandle<Result<(), ExportError>> {
    if S::BLOCKING {
        on_own_thread(send_each(sink, rx))
    } else {
        tokio::spawn(send_each(sink, rx))
    }
}

/// The latest measurement, at each new one and whenever the sink asks to
/// be called again ([`Sink::retry_at`]).
async fn send_each<S: Sink>(mut sink: S, mut rx: MeasurementRx) -> Result<(), ExportError> {
    let mut latest = None;
    loop {
        let retry_at = sink.retry_at().filter(|_| latest.is_some());
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                latest = rx.borrow_and_update().clone();
            }
            () = retry => {}
        }
        if let Some(measurement) = &latest {
            sink.send(measurement).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{
        exporters::points::tests::sample_snapshot, metrics::MetricsConfig, sensors::EnergyOrigin,
    };

    /// Records what it is sent; `fail_after` sends, fails.
    struct Recorder {
        seen: Arc<Mutex<Vec<usize>>>,
        fail_after: usize,
    }

    impl Sink for Recorder {
        async fn send(&mut self, m: &Measurement) -> Result<(), ExportError> {
            let mut seen = self.seen.lock().expect("lock");
            seen.push(m.families.len());
            if seen.len() > self.fail_after {
                return Err(std::io::Error::other("closed").into());
            }
            Ok(())
        }
    }

    struct Blocking(Recorder);

    impl Sink for Blocking {
        const BLOCKING: bool = true;

        async fn send(&mut self, m: &Measurement) -> Result<(), ExportError> {
            self.0.send(m).await
        }
    }

    fn recorder(fail_after: usize) -> (Recorder, Arc<Mutex<Vec<usize>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Recorder {
            seen: seen.clone(),
            fail_after,
        };
        (sink, seen)
    }

    #[tokio::test]
    async fn sends_until_measurement_stops() {
        let (tx, rx) = watch::channel(None);
        let (sink, seen) = recorder(usize::MAX);
        let metrics = MetricsState::new(MetricsConfig::default());
        let driver = tokio::spawn(run(rx, Some(metrics), sink, None));
        tx.send_replace(Some(Arc::new(sample_snapshot(EnergyOrigin::Measured))));
        drop(tx);
        driver.await.expect("joined").expect("no error");
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1, "the last measurement is sent");
        assert!(seen[0] > 0, "with its families");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_sink_runs_off_the_workers_and_its_error_ends_the_driver() {
        let (tx, rx) = watch::channel(None);
        let (sink, seen) = recorder(0);
        let driver = tokio::spawn(run(rx, None, Blocking(sink), None));
        tx.send_replace(Some(Arc::new(sample_snapshot(EnergyOrigin::Measured))));
        let result = driver.await.expect("joined");
        assert!(matches!(result, Err(ExportError::Io(_))), "{result:?}");
        assert_eq!(*seen.lock().expect("lock"), [0], "no metrics asked for");
    }

    /// Fails once and asks to be called again 50 ms later.
    struct Retrying {
        calls: Arc<Mutex<Vec<std::time::Instant>>>,
        retry_at: Option<std::time::Instant>,
    }

    impl Sink for Retrying {
        async fn send(&mut self, _: &Measurement) -> Result<(), ExportError> {
            let now = std::time::Instant::now();
            let mut calls = self.calls.lock().expect("lock");
            calls.push(now);
            self.retry_at = (calls.len() == 1).then(|| now + Duration::from_millis(50));
            Ok(())
        }

        fn retry_at(&self) -> Option<std::time::Instant> {
            self.retry_at
        }
    }

    #[tokio::test]
    async fn a_sink_is_called_again_when_it_asks() {
        let (tx, rx) = watch::channel(None);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let sink = Retrying {
            calls: calls.clone(),
            retry_at: None,
        };
        let driver = tokio::spawn(run(rx, None, sink, None));
        tx.send_replace(Some(Arc::new(sample_snapshot(EnergyOrigin::Measured))));
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(tx);
        driver.await.expect("joined").expect("no error");
        let calls = calls.lock().expect("lock");
        assert_eq!(calls.len(), 2, "one measurement, sent again once");
        assert!(calls[1] - calls[0] >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn the_timeout_ends_it() {
        let (_tx, rx) = watch::channel(None);
        let (sink, seen) = recorder(usize::MAX);
        run(rx, None, sink, Some(Duration::from_millis(50)))
            .await
            .expect("no error");
        assert!(seen.lock().expect("lock").is_empty());
    }
}
